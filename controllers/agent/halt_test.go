package agent_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ipvs-operator/ipvs-operator/controllers/agent"
	"github.com/ipvs-operator/ipvs-operator/controllers/agent/desired"
	"github.com/ipvs-operator/ipvs-operator/ipvs/syncer"
)

// recordingEngine records the calls that reach it; a call to SyncService blocks until release is closed
// when release is set.
type recordingEngine struct {
	mu      sync.Mutex
	calls   []string
	entered chan struct{}
	release chan struct{}
}

func (e *recordingEngine) record(c string) {
	e.mu.Lock()
	e.calls = append(e.calls, c)
	e.mu.Unlock()
}

func (e *recordingEngine) Calls() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.calls)
}

func (e *recordingEngine) Adopt(context.Context) error { e.record("Adopt"); return nil }
func (e *recordingEngine) SyncService(_ context.Context, key string, _ desired.State) (syncer.Result, error) {
	if e.release != nil {
		close(e.entered)
		<-e.release
	}
	e.record("SyncService " + key)
	return syncer.Result{Ops: 1}, nil
}
func (e *recordingEngine) Retain(_ context.Context, key string, _ []netip.Addr) (syncer.Result, error) {
	e.record("Retain " + key)
	return syncer.Result{}, nil
}
func (e *recordingEngine) Audit(context.Context) error { e.record("Audit"); return errors.New("drift") }
func (e *recordingEngine) SetPodCIDRs(context.Context, []netip.Prefix) error {
	e.record("SetPodCIDRs")
	return nil
}
func (e *recordingEngine) CheckDrift(context.Context) (syncer.Drift, error) {
	e.record("CheckDrift")
	return syncer.Drift("table"), nil
}
func (e *recordingEngine) Resync(context.Context) error { e.record("Resync"); return nil }

// everyCall makes each Engine call once.
func everyCall(ctx context.Context, e agent.Engine) []error {
	_, syncErr := e.SyncService(ctx, "ns/web", desired.State{})
	_, retainErr := e.Retain(ctx, "ns/bad", nil)
	drift, driftErr := e.CheckDrift(ctx)
	if driftErr == nil && drift != "" && e.(*agent.HaltableEngine).Halted() {
		driftErr = fmt.Errorf("a halted engine reported drift %q: the canary would put everything back", drift)
	}
	return []error{e.Adopt(ctx), syncErr, retainErr, e.Audit(ctx), e.SetPodCIDRs(ctx, nil), driftErr, e.Resync(ctx)}
}

func TestHaltableEngineStopsEveryCallAfterHalt(t *testing.T) {
	ctx := context.Background()
	inner := &recordingEngine{}
	cleanups := 0
	h := agent.NewHaltableEngine(inner, func(context.Context) (syncer.Removed, error) {
		cleanups++
		return syncer.Removed{Interface: true, Table: true}, nil
	})

	errs := everyCall(ctx, h)
	want := []string{"SyncService ns/web", "Retain ns/bad", "CheckDrift", "Adopt", "Audit", "SetPodCIDRs", "Resync"}
	if got := inner.Calls(); !slices.Equal(got, want) {
		t.Fatalf("before Halt the engine saw %v, want %v", got, want)
	}
	if errs[3] == nil {
		t.Error("before Halt an Audit error must come through")
	}
	if err := h.ReadyCheck(nil); err != nil {
		t.Errorf("ready before Halt: %v", err)
	}

	removed, err := h.Halt(ctx)
	if err != nil || !removed.Interface || cleanups != 1 {
		t.Fatalf("Halt: %+v, %v (cleanups %d)", removed, err, cleanups)
	}
	for i, err := range everyCall(ctx, h) {
		if err != nil {
			t.Errorf("call %d after Halt: %v, want a silent no-op", i, err)
		}
	}
	if got := inner.Calls(); len(got) != len(want) {
		t.Errorf("after Halt the engine saw %v: nothing may reach the kernel", got[len(want):])
	}
	if err := h.ReadyCheck(nil); !errors.Is(err, agent.ErrHalted) {
		t.Errorf("ReadyCheck after Halt: %v, want ErrHalted", err)
	}
	if _, err := h.Halt(ctx); err != nil || cleanups != 2 {
		t.Errorf("a second Halt must run the cleanup again (a retry): %v, cleanups %d", err, cleanups)
	}
}

// A call under way when Halt comes finishes first; the cleanup then removes what it programmed.
func TestHaltWaitsForCallsUnderWay(t *testing.T) {
	ctx := context.Background()
	inner := &recordingEngine{entered: make(chan struct{}), release: make(chan struct{})}
	h := agent.NewHaltableEngine(inner, func(context.Context) (syncer.Removed, error) {
		inner.record("Cleanup")
		return syncer.Removed{}, nil
	})
	go func() { _, _ = h.SyncService(ctx, "ns/slow", desired.State{}) }()
	<-inner.entered
	halted := make(chan struct{})
	go func() {
		_, _ = h.Halt(ctx)
		close(halted)
	}()
	select {
	case <-halted:
		t.Fatal("Halt cleaned up while a SyncService was still programming")
	case <-time.After(50 * time.Millisecond):
	}
	close(inner.release)
	<-halted
	if got, want := inner.Calls(), []string{"SyncService ns/slow", "Cleanup"}; !slices.Equal(got, want) {
		t.Errorf("calls %v, want %v", got, want)
	}
}
