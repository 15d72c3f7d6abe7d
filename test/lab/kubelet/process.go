package kubelet

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/util/wait"
)

// processSpec is one start of a container's process.
type processSpec struct {
	Argv    []string
	Env     []string
	Dir     string
	LogPath string
}

// exitInfo is how a process ended.
type exitInfo struct {
	ExitCode   int32
	Signal     int32
	Reason     string // Completed, Error
	Message    string
	StartedAt  time.Time
	FinishedAt time.Time
}

// processState is what container status reports about the supervised process.
type processState struct {
	Running        bool
	PID            int
	StartedAt      time.Time
	Starts         int   // processes started by this supervisor
	Restarts       int32 // the container's restartCount (including restarts before a kubelet restart)
	Waiting        string
	WaitingMessage string
	LastExit       *exitInfo
	Stopped        bool // the pod is terminating and the process has ended for good
	Succeeded      bool // an init container's process exited 0: it is done
}

// restartBackoff is CrashLoopBackOff, scaled down for a lab: 1 s doubling to 20 s, reset after a process
// stayed up for a minute.
func restartBackoff() wait.Backoff {
	return wait.Backoff{Duration: time.Second, Factor: 2, Cap: 20 * time.Second, Steps: math.MaxInt32}
}

const backoffResetAfter = time.Minute

// supervisor runs one container's process with restartPolicy Always: it restarts a process that exits, with
// backoff, until its context ends; then it sends SIGTERM and, after killGrace, SIGKILL. Terminate stops it the
// way a kubelet stops a deleted pod's container: SIGTERM at once, SIGKILL when the grace period is over, and
// no restart, while the probes of the process go on until it has exited.
type supervisor struct {
	log       logr.Logger
	build     func(ctx context.Context) (processSpec, error) // evaluated per start: env refs, token files
	killGrace time.Duration
	// onStart runs for each started process with a context that ends when that process does (probes).
	onStart  func(ctx context.Context, pid int)
	onChange func()
	// untilSuccess makes Run end once a process exits 0 (an init container); failures are retried.
	untilSuccess bool

	terminateOnce sync.Once
	terminating   chan struct{} // closed by Terminate
	terminateIn   time.Duration // Terminate's grace period: from SIGTERM to SIGKILL

	mu    sync.Mutex
	state processState
	cmd   *exec.Cmd
}

func newSupervisor(log logr.Logger, restarts int32, killGrace time.Duration,
	build func(context.Context) (processSpec, error), onStart func(context.Context, int), onChange func()) *supervisor {
	return &supervisor{
		log: log, build: build, killGrace: killGrace, onStart: onStart, onChange: onChange,
		terminating: make(chan struct{}),
		state:       processState{Restarts: restarts, Waiting: "ContainerCreating"},
	}
}

// Terminate ends the container for good, as a kubelet does once its pod's deletion starts: SIGTERM to the
// running process now (a server then fails its readiness while it still serves, as agnhost netexec
// --delay-shutdown and the lab's echo server do), SIGKILL if it still runs after grace, and no process is
// started again. Run returns once the process has exited. Only the first call counts.
func (s *supervisor) Terminate(grace time.Duration) {
	s.terminateOnce.Do(func() {
		s.mu.Lock()
		s.terminateIn = grace
		s.mu.Unlock()
		close(s.terminating)
	})
}

// isTerminating tells whether Terminate was called.
func (s *supervisor) isTerminating() bool {
	select {
	case <-s.terminating:
		return true
	default:
		return false
	}
}

func (s *supervisor) State() processState {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.state
	if st.LastExit != nil {
		e := *st.LastExit
		st.LastExit = &e
	}
	return st
}

func (s *supervisor) update(fn func(*processState)) {
	s.mu.Lock()
	fn(&s.state)
	s.mu.Unlock()
	if s.onChange != nil {
		s.onChange()
	}
}

// Run supervises until ctx ends, and returns once the last process has exited.
func (s *supervisor) Run(ctx context.Context) {
	backoff := restartBackoff()
	for ctx.Err() == nil && !s.isTerminating() {
		spec, err := s.build(ctx)
		if err != nil {
			s.log.Error(err, "Preparing container failed")
			s.update(func(st *processState) { st.Waiting, st.WaitingMessage = "CreateContainerConfigError", err.Error() })
			if !s.sleep(ctx, backoff.Step()) {
				break
			}
			continue
		}
		if s.isTerminating() {
			break // the pod's deletion started while the process was being prepared
		}
		exit, err := s.runOnce(ctx, spec)
		if err != nil {
			s.log.Error(err, "Starting container failed", "argv", spec.Argv)
			s.update(func(st *processState) { st.Waiting, st.WaitingMessage = "RunContainerError", err.Error() })
			if !s.sleep(ctx, backoff.Step()) {
				break
			}
			continue
		}
		if ctx.Err() != nil || s.isTerminating() {
			s.update(func(st *processState) { st.LastExit, st.Stopped = exit, true })
			return
		}
		if s.untilSuccess && exit.ExitCode == 0 {
			s.log.Info("Init container completed")
			s.update(func(st *processState) { st.LastExit, st.Stopped, st.Succeeded = exit, true, true })
			return
		}
		if exit.FinishedAt.Sub(exit.StartedAt) > backoffResetAfter {
			backoff = restartBackoff()
		}
		delay := backoff.Step()
		s.log.Info("Container exited, restarting", "exitCode", exit.ExitCode, "signal", exit.Signal, "after", delay.String())
		s.update(func(st *processState) {
			st.LastExit = exit
			st.Restarts++
			st.Waiting = "CrashLoopBackOff"
			st.WaitingMessage = fmt.Sprintf("back-off %s restarting failed container", delay)
		})
		if !s.sleep(ctx, delay) {
			break
		}
	}
	s.update(func(st *processState) { st.Stopped = true })
}

// sleep waits d, and reports false if ctx ended or Terminate was called first.
func (s *supervisor) sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-s.terminating:
		return false
	case <-t.C:
		return true
	}
}

// runOnce starts the process and waits for it; when ctx ends first it stops the process.
func (s *supervisor) runOnce(ctx context.Context, spec processSpec) (*exitInfo, error) {
	logFile, err := openLog(spec.LogPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	cmd := exec.Command(spec.Argv[0], spec.Argv[1:]...)
	cmd.Env = spec.Env
	cmd.Dir = spec.Dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Own process group, so signals reach helpers the process started; SIGKILL if the kubelet dies, so that
	// a restarted kubelet never finds a stray process holding a pod's ports.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	_, _ = fmt.Fprintf(logFile, "=== %s lab kubelet: starting %s\n", start.Format(time.RFC3339Nano), strings.Join(spec.Argv, " "))
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.cmd = cmd
	s.mu.Unlock()
	settled := waitSettled(ctx, "/proc", cmd.Process.Pid, settleTimeout, s.terminating)
	s.mu.Lock()
	s.state.Running, s.state.PID, s.state.StartedAt = true, cmd.Process.Pid, start
	s.state.Starts++
	s.state.Waiting, s.state.WaitingMessage = "", ""
	s.mu.Unlock()
	if s.onChange != nil {
		s.onChange()
	}
	s.log.Info("Container started", "pid", cmd.Process.Pid, "settledAfter", time.Since(start).Round(time.Millisecond).String(), "settled", settled)

	procCtx, cancelProc := context.WithCancel(ctx)
	if s.onStart != nil {
		go s.onStart(procCtx, cmd.Process.Pid)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var waitErr error
	select {
	case waitErr = <-exited:
	case <-ctx.Done():
		waitErr = s.terminate(cmd, exited, s.killGrace, nil)
	case <-s.terminating:
		s.mu.Lock()
		grace := s.terminateIn
		s.mu.Unlock()
		// A kubelet stop or an abort during the grace period cuts it to killGrace.
		waitErr = s.terminate(cmd, exited, grace, ctx.Done())
	}
	cancelProc()
	exit := exitFrom(cmd.ProcessState, waitErr, start)
	_, _ = fmt.Fprintf(logFile, "=== %s lab kubelet: exited code=%d signal=%d\n", exit.FinishedAt.Format(time.RFC3339Nano), exit.ExitCode, exit.Signal)
	s.mu.Lock()
	s.cmd = nil
	s.state.Running, s.state.PID = false, 0
	s.mu.Unlock()
	return exit, nil
}

// terminate sends SIGTERM to the process group and SIGKILL after grace; if hurry closes first, SIGKILL comes
// killGrace after that instead (when that is sooner).
func (s *supervisor) terminate(cmd *exec.Cmd, exited <-chan error, grace time.Duration, hurry <-chan struct{}) error {
	pid := cmd.Process.Pid
	s.log.Info("Stopping container", "pid", pid, "gracePeriod", grace.String())
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	t := time.NewTimer(grace)
	defer t.Stop()
	for {
		select {
		case err := <-exited:
			return err
		case <-hurry:
			hurry = nil
			if sooner := time.Now().Add(s.killGrace); sooner.Before(deadline) {
				deadline = sooner
				t.Reset(s.killGrace)
			}
		case <-t.C:
			s.log.Info("Container still running after its grace period, killing", "pid", pid)
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			return <-exited
		}
	}
}

// Kill ends the running process (liveness failure); Run then restarts it.
func (s *supervisor) Kill(reason string) {
	s.mu.Lock()
	cmd := s.cmd
	s.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	s.log.Info("Killing container", "reason", reason, "pid", cmd.Process.Pid)
	pid := cmd.Process.Pid
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	go func() {
		time.Sleep(s.killGrace)
		s.mu.Lock()
		still := s.cmd == cmd
		s.mu.Unlock()
		if still {
			_ = syscall.Kill(-pid, syscall.SIGKILL)
		}
	}()
}

func exitFrom(ps *os.ProcessState, waitErr error, started time.Time) *exitInfo {
	e := &exitInfo{StartedAt: started, FinishedAt: time.Now(), Reason: "Error"}
	if ps == nil {
		e.ExitCode, e.Message = 128, fmt.Sprint(waitErr)
		return e
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		e.Signal = int32(ws.Signal())
		e.ExitCode = 128 + e.Signal
		return e
	}
	e.ExitCode = int32(ps.ExitCode())
	if e.ExitCode == 0 {
		e.Reason = "Completed"
	}
	return e
}

func openLog(path string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("log directory: %w", err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening container log: %w", err)
	}
	return f, nil
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

var errUnsupported = errors.New("not supported by the lab kubelet")
