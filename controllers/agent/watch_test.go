package agent_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/ipvs-operator/ipvs-operator/controllers/agent"
	"github.com/ipvs-operator/ipvs-operator/controllers/agent/desired"
	"github.com/ipvs-operator/ipvs-operator/ipvs"
	"github.com/ipvs-operator/ipvs-operator/ipvs/syncer"
)

// scriptedEngine answers every call with err; a call blocks until release is closed when block is set.
type scriptedEngine struct {
	err     error
	block   bool
	entered chan struct{}
	release chan struct{}
}

func (e *scriptedEngine) do() error {
	if e.block {
		close(e.entered)
		<-e.release
	}
	return e.err
}
func (e *scriptedEngine) Adopt(context.Context) error { return e.do() }
func (e *scriptedEngine) SyncService(context.Context, string, desired.State) (syncer.Result, error) {
	return syncer.Result{}, e.do()
}
func (e *scriptedEngine) Retain(context.Context, string, []netip.Addr) (syncer.Result, error) {
	return syncer.Result{}, e.do()
}
func (e *scriptedEngine) Audit(context.Context) error                       { return e.do() }
func (e *scriptedEngine) CheckDrift(context.Context) (syncer.Drift, error)  { return "", e.do() }
func (e *scriptedEngine) Resync(context.Context) error                      { return e.do() }
func (e *scriptedEngine) SetPodCIDRs(context.Context, []netip.Prefix) error { return e.do() }

// The kinds of errors the engine returns.
var (
	errNetlink = &syncer.OpError{Err: &ipvs.Error{Op: ipvs.OpAddService, Object: "-t 10.96.0.10:80", Err: unix.ENOBUFS}}
	// A Service asks for a scheduler whose module is not loaded: that Service's problem, not the node's.
	errScheduler = &syncer.OpError{Err: &ipvs.Error{Op: ipvs.OpAddService, Object: "-t 10.96.0.11:80", Err: unix.ENOENT}}
	errInvalid   = fmt.Errorf("ns/web: %w", syncer.ErrInvalidDesired)
)

func TestWatchedEngineReadiness(t *testing.T) {
	const bound = 2 * time.Minute
	type step struct {
		after time.Duration // advance the clock first
		call  string        // sync, retain, cidrs, audit, resync, drift; "" calls nothing
		err   error
	}
	cases := []struct {
		name  string
		steps []step
		ready bool
	}{
		{"nothing happened yet", nil, true},
		{"syncs failing for less than the bound", []step{{0, "sync", errNetlink}, {bound, "sync", errNetlink}}, true},
		{"syncs failing for longer than the bound", []step{{0, "sync", errNetlink}, {time.Minute, "retain", errNetlink}, {bound, "", nil}}, false},
		{"a success ends the streak", []step{{0, "sync", errNetlink}, {bound, "sync", nil}, {time.Minute, "sync", errNetlink}, {time.Minute, "", nil}}, true},
		{"pod CIDRs that cannot be set count as syncs", []step{{0, "cidrs", errNetlink}, {bound + time.Second, "", nil}}, false},
		{"one Service's missing scheduler is not the node's", []step{{0, "sync", errScheduler}, {time.Hour, "sync", errScheduler}}, true},
		{"an invalid Service is not the node's", []step{{0, "sync", errInvalid}, {time.Hour, "sync", errInvalid}}, true},
		{"object errors neither start nor end a streak", []step{{0, "sync", errNetlink}, {time.Minute, "sync", errScheduler}, {2 * time.Minute, "", nil}}, false},
		{"audits failing for longer than the bound", []step{{0, "audit", errNetlink}, {time.Minute, "audit", errNetlink}, {time.Minute + time.Second, "", nil}}, false},
		{"an audit that only found a bad Service", []step{{0, "audit", errors.Join(errScheduler, errInvalid)}, {time.Hour, "audit", errors.Join(errScheduler)}}, true},
		{"an audit with a real failure among bad Services", []step{{0, "audit", errors.Join(errScheduler, errNetlink)}, {bound + time.Second, "", nil}}, false},
		{"a resync after drift ends an audit streak", []step{{0, "audit", errNetlink}, {time.Minute, "resync", nil}, {bound, "", nil}}, true},
		{"a preempted audit is no failure", []step{{0, "audit", syncer.ErrAuditPreempted}, {time.Hour, "", nil}}, true},
		{"a failing drift canary alone says nothing", []step{{0, "drift", errNetlink}, {time.Hour, "drift", errNetlink}}, true},
		{"syncs succeeding do not hide failing audits", []step{{0, "audit", errNetlink}, {time.Minute, "sync", nil}, {bound, "sync", nil}}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			clk := clocktesting.NewFakePassiveClock(time.Unix(1000, 0))
			inner := &scriptedEngine{}
			w := agent.NewWatchedEngine(inner, agent.WatchConfig{Clock: clk, UnreadyAfter: bound, AuditPeriod: time.Minute})
			for _, s := range tc.steps {
				clk.SetTime(clk.Now().Add(s.after))
				inner.err = s.err
				var err error
				switch s.call {
				case "sync":
					_, err = w.SyncService(ctx, "ns/web", desired.State{})
				case "retain":
					_, err = w.Retain(ctx, "ns/web", nil)
				case "cidrs":
					err = w.SetPodCIDRs(ctx, nil)
				case "audit":
					err = w.Audit(ctx)
				case "resync":
					err = w.Resync(ctx)
				case "drift":
					_, err = w.CheckDrift(ctx)
				}
				if !errors.Is(err, s.err) {
					t.Fatalf("%s returned %v, want the engine's %v passed through", s.call, err, s.err)
				}
			}
			err := w.ReadyCheck(nil)
			if tc.ready && err != nil {
				t.Fatalf("ReadyCheck = %v, want ready", err)
			}
			if !tc.ready && !errors.Is(err, agent.ErrCannotProgram) {
				t.Fatalf("ReadyCheck = %v, want %v", err, agent.ErrCannotProgram)
			}
			if err := w.LiveCheck(nil); err != nil {
				t.Fatalf("LiveCheck = %v with no call under way", err)
			}
		})
	}
}

// TestWatchedEngineAuditBoundFollowsThePeriod: with audits far apart, one failed audit must not make the
// node unready before the next one had a chance.
func TestWatchedEngineAuditBoundFollowsThePeriod(t *testing.T) {
	clk := clocktesting.NewFakePassiveClock(time.Unix(1000, 0))
	inner := &scriptedEngine{err: errNetlink}
	w := agent.NewWatchedEngine(inner, agent.WatchConfig{Clock: clk, AuditPeriod: 5 * time.Minute})
	_ = w.Audit(context.Background())
	clk.SetTime(clk.Now().Add(9 * time.Minute))
	if err := w.ReadyCheck(nil); err != nil {
		t.Fatalf("one failed audit, the next not due yet: %v", err)
	}
	clk.SetTime(clk.Now().Add(2 * time.Minute))
	if err := w.ReadyCheck(nil); !errors.Is(err, agent.ErrCannotProgram) || !errors.Is(err, unix.ENOBUFS) {
		t.Fatalf("no successful audit for two periods: ReadyCheck = %v", err)
	}
}

// TestWatchedEngineLiveness: a call stuck in the kernel beyond the bound fails liveness (the kubelet then
// restarts the agent), and liveness recovers when it returns.
func TestWatchedEngineLiveness(t *testing.T) {
	for _, verb := range []string{"SyncService", "Audit", "CheckDrift", "Adopt"} {
		t.Run(verb, func(t *testing.T) {
			ctx := context.Background()
			clk := clocktesting.NewFakePassiveClock(time.Unix(1000, 0))
			inner := &scriptedEngine{block: true, entered: make(chan struct{}), release: make(chan struct{})}
			w := agent.NewWatchedEngine(inner, agent.WatchConfig{Clock: clk})
			done := make(chan struct{})
			go func() {
				defer close(done)
				switch verb {
				case "SyncService":
					_, _ = w.SyncService(ctx, "ns/web", desired.State{})
				case "Audit":
					_ = w.Audit(ctx)
				case "CheckDrift":
					_, _ = w.CheckDrift(ctx)
				case "Adopt":
					_ = w.Adopt(ctx)
				}
			}()
			<-inner.entered
			clk.SetTime(clk.Now().Add(agent.DefaultWedgedAfter))
			if err := w.LiveCheck(nil); err != nil {
				t.Fatalf("a call running for exactly the bound: %v", err)
			}
			clk.SetTime(clk.Now().Add(time.Second))
			err := w.LiveCheck(nil)
			if !errors.Is(err, agent.ErrWedged) {
				t.Fatalf("LiveCheck = %v, want %v", err, agent.ErrWedged)
			}
			t.Log(err)
			close(inner.release)
			<-done
			if err := w.LiveCheck(nil); err != nil {
				t.Fatalf("the call returned: LiveCheck = %v", err)
			}
		})
	}
}
