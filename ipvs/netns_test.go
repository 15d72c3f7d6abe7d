package ipvs_test

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// testNS is a fresh network namespace for one test, so that nothing a test programs touches the host.
type testNS struct {
	ns   netns.NsHandle
	path string // a path other processes and namespace-taking constructors can open
	h    *netlink.Handle
}

// newTestNS creates a namespace with lo up (IPVS refuses real servers with EINVAL in a namespace whose
// lo is down). It skips the test when not root. The calling goroutine's thread is left where it was.
func newTestNS(t testing.TB) *testNS {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	ns, err := netns.New() // moves this thread into the new namespace
	if err != nil {
		t.Skipf("cannot create a network namespace: %v", err)
	}
	if err := netns.Set(orig); err != nil {
		panic(fmt.Sprintf("cannot return to the original network namespace: %v", err))
	}
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		ns.Close()
		t.Fatal(err)
	}
	n := &testNS{ns: ns, path: fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), int(ns)), h: h}
	t.Cleanup(func() { h.Close(); ns.Close() })
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	return n
}

// do runs fn with the calling goroutine's thread inside the namespace (a child process started by fn
// inherits it).
func (n *testNS) do(fn func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return err
	}
	defer orig.Close()
	if err := netns.Set(n.ns); err != nil {
		return err
	}
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		panic(fmt.Sprintf("cannot return to the original network namespace: %v", err))
	}
	return ferr
}

// run runs a command inside the namespace and returns its combined output.
func (n *testNS) run(name string, args ...string) (string, error) {
	var out []byte
	err := n.do(func() error {
		var err error
		out, err = exec.Command(name, args...).CombinedOutput()
		return err
	})
	return string(out), err
}
