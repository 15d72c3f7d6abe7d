package kubelet

import (
	"context"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/util/wait"
)

func shSpec(t *testing.T, script string) func(context.Context) (processSpec, error) {
	log := filepath.Join(t.TempDir(), "c.log")
	return func(context.Context) (processSpec, error) {
		return processSpec{Argv: []string{"/bin/sh", "-c", script}, Env: []string{"PATH=/usr/bin:/bin"}, Dir: "/", LogPath: log}, nil
	}
}

func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, within, true,
		func(context.Context) (bool, error) { return cond(), nil })
	if err != nil {
		t.Fatalf("timed out after %v waiting for %s", within, what)
	}
}

func TestSupervisorRestartsACrashingProcess(t *testing.T) {
	s := newSupervisor(logr.Discard(), 4, 200*time.Millisecond, shSpec(t, "exit 3"), nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	// restartCount continues from the previous count (4) and grows with each exit.
	waitFor(t, 5*time.Second, "a restart", func() bool { return s.State().Starts >= 2 })
	st := s.State()
	if st.Restarts < 5 || st.LastExit == nil || st.LastExit.ExitCode != 3 || st.LastExit.Reason != "Error" {
		t.Errorf("state after crashes = %+v, last exit %+v", st, st.LastExit)
	}
	cancel()
	<-done
	if !s.State().Stopped {
		t.Error("not marked stopped")
	}
}

func TestSupervisorEscalatesToSIGKILL(t *testing.T) {
	s := newSupervisor(logr.Discard(), 0, 300*time.Millisecond, shSpec(t, `trap "" TERM; while :; do sleep 0.05; done`), nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	waitFor(t, 5*time.Second, "the process to run", func() bool { return s.State().Running })
	time.Sleep(100 * time.Millisecond) // let the shell install its trap
	start := time.Now()
	cancel()
	<-done
	if d := time.Since(start); d < 300*time.Millisecond || d > 3*time.Second {
		t.Errorf("stop took %v, want the kill grace then SIGKILL", d)
	}
	if e := s.State().LastExit; e == nil || e.Signal != int32(syscall.SIGKILL) || e.ExitCode != 137 {
		t.Errorf("last exit = %+v, want SIGKILL", e)
	}
}

func TestSupervisorKillRestartsAndProbesFollowTheProcess(t *testing.T) {
	starts := make(chan context.Context, 4)
	s := newSupervisor(logr.Discard(), 0, time.Second, shSpec(t, "exec sleep 30"),
		func(ctx context.Context, _ int) { starts <- ctx }, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Run(ctx)
	first := <-starts
	s.Kill("liveness probe failed")
	select {
	case <-first.Done(): // the first process's probes end with it
	case <-time.After(3 * time.Second):
		t.Fatal("the killed process's context did not end")
	}
	select {
	case <-starts:
	case <-time.After(5 * time.Second):
		t.Fatal("not restarted after Kill")
	}
	if st := s.State(); st.Restarts != 1 || st.LastExit == nil || st.LastExit.Signal != int32(syscall.SIGTERM) {
		t.Errorf("after kill: %+v %+v", st, st.LastExit)
	}
}

// TestSupervisorTerminate: Terminate is a deleted pod's stop: SIGTERM at once, SIGKILL after the grace period
// (or killGrace after the context ends, when sooner), and never a restart.
func TestSupervisorTerminate(t *testing.T) {
	const killGrace = 300 * time.Millisecond
	for _, tc := range []struct {
		name       string
		script     string
		grace      time.Duration
		cancelCtx  bool // the kubelet stops during the grace period
		beforeRun  bool // Terminate before the process ever started
		wantStarts int
		wantSignal syscall.Signal // 0: exited by itself
		minTime    time.Duration
		maxTime    time.Duration
	}{
		{name: "exits on SIGTERM at once, no restart", script: `trap "exit 0" TERM; while :; do sleep 0.05; done`,
			grace: 10 * time.Second, wantStarts: 1, maxTime: 2 * time.Second},
		{name: "ignores SIGTERM: SIGKILL after the grace period", script: `trap "" TERM; while :; do sleep 0.05; done`,
			grace: time.Second, wantStarts: 1, wantSignal: syscall.SIGKILL, minTime: time.Second, maxTime: 3 * time.Second},
		{name: "kubelet stop cuts the grace period to killGrace", script: `trap "" TERM; while :; do sleep 0.05; done`,
			grace: time.Minute, cancelCtx: true, wantStarts: 1, wantSignal: syscall.SIGKILL, minTime: killGrace, maxTime: 3 * time.Second},
		{name: "terminated before it started: never starts", script: "exec sleep 30",
			grace: time.Minute, beforeRun: true, wantStarts: 0, maxTime: time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSupervisor(logr.Discard(), 0, killGrace, shSpec(t, tc.script), nil, nil)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.beforeRun {
				s.Terminate(tc.grace)
			}
			done := make(chan struct{})
			go func() { s.Run(ctx); close(done) }()
			if !tc.beforeRun {
				waitFor(t, 5*time.Second, "the process to run", func() bool { return s.State().Running })
				time.Sleep(150 * time.Millisecond) // let the shell install its trap
				s.Terminate(tc.grace)
				if tc.cancelCtx {
					time.Sleep(100 * time.Millisecond)
					cancel()
				}
			}
			start := time.Now()
			select {
			case <-done:
			case <-time.After(tc.maxTime + 2*time.Second):
				t.Fatal("Run did not return")
			}
			took := time.Since(start)
			if took < tc.minTime || took > tc.maxTime {
				t.Errorf("stopped after %v, want %v..%v", took, tc.minTime, tc.maxTime)
			}
			st := s.State()
			if !st.Stopped || st.Starts != tc.wantStarts || st.Running {
				t.Errorf("state = %+v, want stopped after %d start(s)", st, tc.wantStarts)
			}
			if tc.wantStarts > 0 {
				if st.LastExit == nil || st.LastExit.Signal != int32(tc.wantSignal) {
					t.Errorf("last exit = %+v, want signal %d", st.LastExit, tc.wantSignal)
				}
			}
		})
	}
}
