// Package host is the lab's work on the host machine: long-lived children (etcd, the control plane, qemu)
// with their output in log files (Proc), one-shot commands (Run, RunStreaming), progress lines and files.
package host

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Proc is a child process of the lab (etcd, a control-plane component, qemu) with its output in a log
// file. Each runs in its own process group, which stop kills, and gets SIGKILL if the lab's process dies.
type Proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

// Start runs argv in its own process group, its output appended to logPath; configure may adjust the command.
func Start(name, logPath string, argv []string, configure func(*exec.Cmd)) (*Proc, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fmt.Fprintf(f, "# %s %s\n", time.Now().Format(time.RFC3339), strings.Join(argv, " "))
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout = f
	cmd.Stderr = f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if configure != nil {
		configure(cmd)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("lab: starting %s: %w", name, err)
	}
	p := &Proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Done is closed when the process has exited; Err then says how.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err is cmd.Wait's result, valid once Done is closed.
func (p *Proc) Err() error { return p.err }

// Log is the file the process writes to.
func (p *Proc) Log() string { return p.log }

// PID is the process's id (and its process group's).
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Exited says whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// ExitError describes how the process ended, pointing at its log.
func (p *Proc) ExitError() error {
	return fmt.Errorf("lab: %s exited (%v); log: %s\n%s", p.name, p.err, p.log, LogTail(p.log, 30)) //nolint:errorlint // cmd.Wait's result, nil after a clean exit: reported, not wrapped
}

// Stop sends SIGTERM to the process group, then SIGKILL after grace.
func (p *Proc) Stop(grace time.Duration) error {
	if p == nil {
		return nil
	}
	if !p.Exited() {
		_ = syscall.Kill(-p.PID(), syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(grace):
		}
	}
	// Also whatever is left in the group (e.g. socat helpers of qemu's guest forwards).
	_ = syscall.Kill(-p.PID(), syscall.SIGKILL)
	select {
	case <-p.done:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("lab: %s (pid %d) did not exit", p.name, p.PID())
	}
}

// LogTail returns the last n lines of a file.
func LogTail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  | " + strings.Join(lines, "\n  | ")
}

// FreePorts returns n distinct free TCP ports on 127.0.0.1.
func FreePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// WaitFor polls check until it succeeds, a process in watch exits, or timeout.
func WaitFor(what string, timeout time.Duration, interval time.Duration, watch []*Proc, check func() error) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		if last = check(); last == nil {
			return nil
		}
		for _, p := range watch {
			if p != nil && p.Exited() {
				return fmt.Errorf("lab: waiting for %s: %w", what, p.ExitError())
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("lab: %s not ready after %s: %w", what, timeout, last)
		}
		time.Sleep(interval)
	}
}

// Name is what the lab calls the process ("etcd", "qemu", ...).
func (p *Proc) Name() string { return p.name }

// Path is the program the process runs.
func (p *Proc) Path() string { return p.cmd.Path }
