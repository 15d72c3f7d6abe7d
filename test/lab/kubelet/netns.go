package kubelet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// mountNamespaceRunner runs commands whose mounts must land in a chosen mount namespace. `ip netns add` names
// a network namespace with a bind mount under /var/run/netns; the guest init starts this kubelet with
// `ip netns exec node-x`, which gives it a private (slave) mount namespace, so a mount made there would be
// seen by nobody else and would vanish with the kubelet. Commands are therefore forked from one OS thread
// that has joined the host's mount namespace: a child inherits the namespaces of the thread that forks it.
type mountNamespaceRunner struct {
	requests chan mountNSRequest
}

type mountNSRequest struct {
	fn   func() error
	done chan error
}

// startMountNamespaceRunner joins nsPath (e.g. /proc/1/ns/mnt) on a dedicated locked thread. An empty path,
// or the namespace the process is already in, runs commands in place.
func startMountNamespaceRunner(ctx context.Context, nsPath string) (*mountNamespaceRunner, error) {
	r := &mountNamespaceRunner{requests: make(chan mountNSRequest)}
	ready := make(chan error, 1)
	go func() {
		// Never unlocked: when this goroutine returns, the runtime ends the thread, whose namespaces differ
		// from the rest of the process.
		runtime.LockOSThread()
		if err := joinMountNamespace(nsPath); err != nil {
			ready <- err
			return
		}
		ready <- nil
		for {
			select {
			case <-ctx.Done():
				return
			case req := <-r.requests:
				req.done <- req.fn()
			}
		}
	}()
	if err := <-ready; err != nil {
		return nil, err
	}
	return r, nil
}

func joinMountNamespace(nsPath string) error {
	if nsPath == "" {
		return nil
	}
	var target, self unix.Stat_t
	if err := unix.Stat(nsPath, &target); err != nil {
		return fmt.Errorf("mount namespace %s: %w", nsPath, err)
	}
	if err := unix.Stat("/proc/thread-self/ns/mnt", &self); err != nil {
		return fmt.Errorf("own mount namespace: %w", err)
	}
	if target.Ino == self.Ino && target.Dev == self.Dev {
		return nil
	}
	fd, err := unix.Open(nsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening mount namespace %s: %w", nsPath, err)
	}
	defer unix.Close(fd)
	// setns(CLONE_NEWNS) refuses a thread that shares its filesystem context with the other threads.
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return fmt.Errorf("unsharing the filesystem context: %w", err)
	}
	if err := unix.Setns(fd, unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("joining mount namespace %s: %w", nsPath, err)
	}
	return nil
}

// run executes fn on the runner's thread; fn must do its work in child processes (exec), not goroutines.
func (r *mountNamespaceRunner) run(ctx context.Context, fn func() error) error {
	req := mountNSRequest{fn: fn, done: make(chan error, 1)}
	select {
	case r.requests <- req:
	case <-ctx.Done():
		return ctx.Err()
	}
	return <-req.done
}

// netnsManager names, lists and removes pod network namespaces with iproute2.
type netnsManager struct {
	ipCommand string
	dir       string
	prefix    string
	mounts    *mountNamespaceRunner
}

// Path is the file that names network namespace name.
func (m *netnsManager) Path(name string) string { return filepath.Join(m.dir, name) }

func (m *netnsManager) Exists(name string) bool {
	_, err := os.Stat(m.Path(name))
	return err == nil
}

// Create makes a new, empty network namespace called name, replacing a stale one.
// Equivalent to: `ip netns del NAME; ip netns add NAME`.
func (m *netnsManager) Create(ctx context.Context, name string) error {
	if m.Exists(name) {
		if err := m.Delete(ctx, name); err != nil {
			return err
		}
	}
	return m.ip(ctx, "netns", "add", name)
}

// Delete removes network namespace name; a missing one is not an error.
// Equivalent to: `ip netns del NAME`.
func (m *netnsManager) Delete(ctx context.Context, name string) error {
	if !m.Exists(name) {
		return nil
	}
	return m.ip(ctx, "netns", "del", name)
}

// List returns the names of the network namespaces that carry the pod prefix.
func (m *netnsManager) List() ([]string, error) {
	entries, err := os.ReadDir(m.dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), m.prefix) {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

func (m *netnsManager) ip(ctx context.Context, args ...string) error {
	return m.mounts.run(ctx, func() error {
		out, err := exec.CommandContext(ctx, m.ipCommand, args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s %s: %w: %s", m.ipCommand, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
		return nil
	})
}

// ExecArgv wraps argv so that it runs in network namespace name (with that namespace's /sys).
// Equivalent to: `ip netns exec NAME ARGV...`.
func (m *netnsManager) ExecArgv(name string, argv []string) []string {
	return append([]string{m.ipCommand, "netns", "exec", name}, argv...)
}
