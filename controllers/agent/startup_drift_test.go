package agent

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/ipvs-operator/ipvs-operator/ipvs/syncer"
)

// driftEngine answers CheckDrift from a script and records what the periodic loop asked of it.
type driftEngine struct {
	Engine // unused methods panic
	mu     sync.Mutex
	script []syncer.Drift
	checks int
	audits int
	resync chan struct{}
}

func (e *driftEngine) CheckDrift(context.Context) (syncer.Drift, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.checks++
	if len(e.script) == 0 {
		return syncer.NoDrift, nil
	}
	d := e.script[0]
	e.script = e.script[1:]
	return d, nil
}

func (e *driftEngine) Resync(context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.checks < 3 {
		return errors.New("resync before the drift was seen")
	}
	close(e.resync)
	return nil
}

func (e *driftEngine) Audit(context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.audits++
	return nil
}

func TestPeriodicLoopResyncsOnDrift(t *testing.T) {
	e := &driftEngine{script: []syncer.Drift{syncer.NoDrift, syncer.NoDrift, syncer.DriftIPVS}, resync: make(chan struct{})}
	s := &Startup{StartupConfig: StartupConfig{Engine: e, AuditPeriod: time.Hour, DriftCheckPeriod: time.Millisecond}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.runPeriodic(ctx)
	}()
	select {
	case <-e.resync:
	case <-time.After(30 * time.Second): // only turns a missing resync into a failure
		t.Fatal("no Resync after the canary reported drift")
	}
	cancel()
	<-done
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.audits != 0 {
		t.Errorf("%d periodic audits in the first hour, want 0 (the start-up pass audited; the drift was repaired by Resync)", e.audits)
	}
}

func TestPeriodicLoopWithoutCanary(t *testing.T) {
	e := &driftEngine{script: []syncer.Drift{syncer.DriftIPVS}, resync: make(chan struct{})}
	s := &Startup{StartupConfig: StartupConfig{Engine: e, AuditPeriod: 10 * time.Millisecond}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.runPeriodic(ctx)
	}()
	// The first audit runs one period after the start; wait for it, then stop.
	for {
		e.mu.Lock()
		n := e.audits
		e.mu.Unlock()
		if n > 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	if e.checks != 0 {
		t.Errorf("DriftCheckPeriod 0 still ran %d checks", e.checks)
	}
}

// TestPeriodicLoopFirstAuditAfterOnePeriod: the start-up pass audits before Ready, so the periodic loop must
// not audit again at once (at 10,000 Services two audits back to back at the end of a cold start).
func TestPeriodicLoopFirstAuditAfterOnePeriod(t *testing.T) {
	e := &driftEngine{resync: make(chan struct{})}
	const period = 300 * time.Millisecond
	s := &Startup{StartupConfig: StartupConfig{Engine: e, AuditPeriod: period}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t0 := time.Now()
	go func() {
		defer close(done)
		s.runPeriodic(ctx)
	}()
	time.Sleep(period / 3)
	e.mu.Lock()
	early := e.audits
	e.mu.Unlock()
	for {
		e.mu.Lock()
		n := e.audits
		e.mu.Unlock()
		if n > 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	first := time.Since(t0)
	cancel()
	<-done
	if early != 0 {
		t.Errorf("%d audits within a third of the period, want 0: the start-up pass has just audited", early)
	}
	if first < period {
		t.Errorf("first periodic audit after %s, want at least the period %s", first, period)
	}
}
