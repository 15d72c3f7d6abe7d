package echo

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// requireSCTP skips where the kernel has no SCTP (this machine's host kernel has none); the lab VM, where it
// does, runs these tests and fails on a skip (test/lab/dataplane/kernel_test.go).
func requireSCTP(t *testing.T) {
	t.Helper()
	if err := sctpSupported(); err != nil {
		t.Skipf("no SCTP in this kernel (%v): the lab VM runs this test", err)
	}
}

// startSCTPServer runs an echo server with one SCTP port on every address (as in a pod) and returns the port.
func startSCTPServer(t *testing.T, name string) int {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	bound := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, Config{Name: name, SCTP: []int{0},
			Listening: func(_, _, sctp []net.Addr) { bound <- sctp[0] }})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Serve did not stop within 5 s of its context ending (a blocked SCTP accept?)")
		}
	})
	select {
	case a := <-bound:
		_, p, err := net.SplitHostPort(a.String())
		if err != nil {
			t.Fatal(err)
		}
		n, _ := strconv.Atoi(p)
		return n
	case err := <-done:
		t.Fatalf("Serve ended early: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("server did not bind")
	}
	return 0
}

// freeSCTPPort is a port where nothing listens on SCTP.
func freeSCTPPort(t *testing.T) int {
	t.Helper()
	l, err := listenSCTP("127.0.0.1", 0)
	if err != nil {
		t.Fatal(err)
	}
	_, p, _ := net.SplitHostPort(l.Addr().String())
	_ = l.Close()
	n, _ := strconv.Atoi(p)
	return n
}

func TestSCTPClientAgainstServer(t *testing.T) {
	requireSCTP(t)
	port := strconv.Itoa(startSCTPServer(t, "pod-s"))
	refused := strconv.Itoa(freeSCTPPort(t))
	src := freeSCTPPort(t)

	steps := []struct {
		name string
		cfg  ClientConfig
		want string
	}{
		{"line protocol over IPv4", ClientConfig{Proto: ProtocolSCTP, Addr: "127.0.0.1:" + port, Count: 3},
			"OK pod-s\nOK pod-s\nOK pod-s\nSUMMARY ok=3 err=0\nCOUNT pod-s 3\n"},
		{"line protocol over IPv6, the same socket", ClientConfig{Proto: ProtocolSCTP, Addr: "[::1]:" + port, Count: 2},
			"OK pod-s\nOK pod-s\nSUMMARY ok=2 err=0\nCOUNT pod-s 2\n"},
		{"by name", ClientConfig{Proto: ProtocolSCTP, Addr: "localhost:" + port},
			"OK pod-s\nSUMMARY ok=1 err=0\nCOUNT pod-s 1\n"},
		// Each association is aborted on close, so the same 4-tuple is free at once for the next.
		{"fixed source port", ClientConfig{Proto: ProtocolSCTP, Addr: "127.0.0.1:" + port, Count: 3, SourcePort: src},
			"OK pod-s\nOK pod-s\nOK pod-s\nSUMMARY ok=3 err=0\nCOUNT pod-s 3\n"},
		{"refused over IPv4", ClientConfig{Proto: ProtocolSCTP, Addr: "127.0.0.1:" + refused, Count: 2},
			"ERR refused\nERR refused\nSUMMARY ok=0 err=2\n"},
		{"refused over IPv6", ClientConfig{Proto: ProtocolSCTP, Addr: "[::1]:" + refused},
			"ERR refused\nSUMMARY ok=0 err=1\n"},
	}
	for _, s := range steps {
		start := time.Now()
		_, out := run(s.cfg)
		if out != s.want {
			t.Errorf("%s: output\n%s\nwant\n%s", s.name, out, s.want)
		}
		if strings.Contains(s.name, "refused") && time.Since(start) > time.Second {
			t.Errorf("%s: took %v, refused must be reported at once", s.name, time.Since(start))
		}
	}
}

// An SCTP association holds like a TCP connection: the server sees them all open at once.
func TestSCTPHoldKeepsAssociationsOpen(t *testing.T) {
	requireSCTP(t)
	port := startSCTPServer(t, "held")
	start := time.Now()
	rs, out := run(ClientConfig{Proto: ProtocolSCTP, Addr: "127.0.0.1:" + strconv.Itoa(port), Count: 3, Hold: 300 * time.Millisecond})
	if ok, failed, _ := rs.Summary(); ok != 3 || failed != 0 {
		t.Fatalf("hold: %s", out)
	}
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Errorf("hold returned after %v, before the hold ended", took)
	}
}

// Closing the listener wakes a blocked Accept with net.ErrClosed, which ends the server's accept loop.
func TestSCTPListenerCloseWakesAccept(t *testing.T) {
	requireSCTP(t)
	l, err := listenSCTP("", 0)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := l.Accept()
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept after Close = %v, want net.ErrClosed", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Accept still blocked 2 s after Close")
	}
}
