package kubelet

import (
	"context"
	"net"
	"testing"
	"time"
)

// The kubelet API listens in another network namespace than the kubelet's (the guest's root one, where the
// host's port forward arrives): the listener must live there, and the kubelet's thread must come back.
func TestListenInAnotherNetworkNamespace(t *testing.T) {
	ctx := context.Background()
	mgr, name := newTestNetns(ctx, t, "root")
	if err := mgr.ip(ctx, "-n", name, "link", "set", "lo", "up"); err != nil {
		t.Fatal(err)
	}

	l, err := listenIn(mgr.Path(name), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("hi"))
			_ = c.Close()
		}
	}()
	addr := l.Addr().String()
	// From here (the test's namespace) nothing listens on that port ...
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatalf("the listener %s is in the caller's namespace", addr)
	}
	// ... and inside the other namespace it answers.
	var got []byte
	if err := runInNetns(mgr.Path(name), func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		buf := make([]byte, 2)
		n, err := c.Read(buf)
		got = buf[:n]
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if string(got) != "hi" {
		t.Errorf("got %q", got)
	}
}
