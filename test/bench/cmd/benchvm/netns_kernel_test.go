package main

import (
	"os"
	"runtime"
	"testing"

	"github.com/vishvananda/netns"
)

// enterFreshNetns moves the test's goroutine, locked to its thread, into a new network namespace until the
// test ends, so the rules a test loads never touch the machine's own. It skips the test unless root and
// unless namespaces can be made.
func enterFreshNetns(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	ns, err := netns.New() // moves this thread into the new namespace
	if err != nil {
		_ = netns.Set(orig)
		orig.Close()
		runtime.UnlockOSThread()
		t.Skipf("no network namespaces: %v", err)
	}
	// Cleanups run on the test's goroutine, still locked to this thread.
	t.Cleanup(func() {
		_ = netns.Set(orig)
		orig.Close()
		ns.Close()
		runtime.UnlockOSThread()
	})
}
