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
	if e.audits != 1 {
		t.Errorf("%d periodic audits in the first hour, want 1 (the drift was repaired by Resync)", e.audits)
	}
}

func TestPeriodicLoopWithoutCanary(t *testing.T) {
	e := &driftEngine{script: []syncer.Drift{syncer.DriftIPVS}, resync: make(chan struct{})}
	s := &Startup{StartupConfig: StartupConfig{Engine: e, AuditPeriod: time.Hour}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.runPeriodic(ctx)
	}()
	// The first audit runs at once; wait for it, then stop.
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
