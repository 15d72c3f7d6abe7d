package nodelock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var seq atomic.Int64

// uniqueName keeps tests apart from each other and from an agent running on this machine.
func uniqueName(t *testing.T) string {
	return fmt.Sprintf("ipvs-operator-test-%d-%d-%s", os.Getpid(), seq.Add(1), t.Name())
}

func TestSecondAcquireNamesTheHolder(t *testing.T) {
	name := uniqueName(t)
	l, err := Acquire(name)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Acquire(name)
	var held *HeldError
	if !errors.As(err, &held) || !errors.Is(err, ErrHeld) {
		t.Fatalf("second Acquire: %v, want a *HeldError", err)
	}
	if held.PID != int32(os.Getpid()) || held.UID != uint32(os.Getuid()) {
		t.Errorf("holder pid %d uid %d, want this process (%d, %d)", held.PID, held.UID, os.Getpid(), os.Getuid())
	}
	if want := fmt.Sprintf("another agent holds the per-node lock @%s (pid %d)", name, os.Getpid()); !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}

	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l2, err := Acquire(name)
	if err != nil {
		t.Fatalf("Acquire after Close: %v", err)
	}
	_ = l2.Close()
}

// The lock is per network namespace: an agent in another one (another lab node) is not refused.
func TestLockIsPerNetworkNamespace(t *testing.T) {
	name := uniqueName(t)
	l, err := Acquire(name)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	errc := make(chan error, 1)
	go func() {
		// The thread enters a fresh network namespace and is never handed back to the scheduler (no
		// UnlockOSThread): it ends with the goroutine.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("skip: unshare(CLONE_NEWNET): %w", err)
			return
		}
		other, err := Acquire(name)
		if err == nil {
			_ = other.Close()
		}
		errc <- err
	}()
	err = <-errc
	if err != nil && strings.HasPrefix(err.Error(), "skip:") {
		t.Skip(err)
	}
	if err != nil {
		t.Fatalf("Acquire in a fresh network namespace: %v", err)
	}
}

func TestAskAndServe(t *testing.T) {
	name := uniqueName(t)
	if _, err := Ask(context.Background(), name, "cleanup"); !errors.Is(err, unix.ECONNREFUSED) {
		t.Fatalf("Ask with no holder: %v, want ECONNREFUSED", err)
	}
	l, err := Acquire(name)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- l.Serve(ctx, func(_ context.Context, cmd string) (string, error) {
			switch cmd {
			case "cleanup":
				return "removed everything\n", nil
			case "fail":
				return "removed half\n", errors.New("the other half is stuck")
			}
			return "", fmt.Errorf("unknown command %q", cmd)
		})
	}()

	for _, tc := range []struct {
		cmd, out, err string
	}{
		{"cleanup", "removed everything\n", ""},
		{"fail", "removed half\n", "the other half is stuck"},
		{"reboot", "", `unknown command "reboot"`},
	} {
		out, err := Ask(ctx, name, tc.cmd)
		gotErr := ""
		if err != nil {
			gotErr = err.Error()
		}
		if out != tc.out || gotErr != tc.err {
			t.Errorf("Ask(%q) = %q, %v; want %q, %q", tc.cmd, out, err, tc.out, tc.err)
		}
	}
	// A holder probe (what a second Acquire does) does not disturb the server.
	if _, err := Acquire(name); !errors.Is(err, ErrHeld) {
		t.Fatalf("Acquire while served: %v", err)
	}
	if out, err := Ask(ctx, name, "cleanup"); err != nil || out == "" {
		t.Errorf("Ask after a probe: %q, %v", out, err)
	}

	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return when its context ended")
	}
	// Serve ended but the lock is still held: a successor must wait for this process to end.
	if _, err := Acquire(name); !errors.Is(err, ErrHeld) {
		t.Errorf("Acquire after Serve returned: %v, want the lock still held", err)
	}
}

func TestAdmitOnlyRoot(t *testing.T) {
	for _, tc := range []struct {
		uid  uint32
		want error
	}{
		{0, nil},
		{1000, ErrPermission},
		{65534, ErrPermission},
	} {
		if err := admit(&unix.Ucred{Pid: 42, Uid: tc.uid}); !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
			t.Errorf("admit(uid %d) = %v, want %v", tc.uid, err, tc.want)
		}
	}
}
