package agent

import (
	"context"
	"errors"
	"net/http"
	"net/netip"
	"sync"

	"github.com/ipvs-operator/ipvs-operator/controllers/agent/desired"
	"github.com/ipvs-operator/ipvs-operator/ipvs/syncer"
)

// ErrHalted is what the readiness check answers once the agent has cleaned up for an uninstall.
var ErrHalted = errors.New("the agent has removed its kernel state for an uninstall and programs nothing until it ends")

// HaltableEngine is the Engine the agent's controllers use: it passes every call through until Halt, and
// from then on makes every call a successful no-op, so that no reconcile, audit or pod-CIDR change can put
// back what the uninstall removed. Calls return nil rather than an error: a halted agent has nothing to
// retry and no failure to report on every Service.
//
// It is a wrapper rather than a state of the sync engine so that it covers the whole Engine surface at one
// place, whatever the engine does inside (its audit may run beside SyncService).
type HaltableEngine struct {
	engine  Engine
	cleanup func(context.Context) (syncer.Removed, error)

	// mu is held shared by every pass-through call and exclusively by Halt, which thus waits for the calls
	// under way to finish before it cleans up, and is never overtaken by one that started earlier.
	mu     sync.RWMutex
	halted bool
}

var _ Engine = (*HaltableEngine)(nil)

// NewHaltableEngine wraps engine; cleanup removes what the agent owns (ipvs/syncer.Syncer.CleanupReport).
func NewHaltableEngine(engine Engine, cleanup func(context.Context) (syncer.Removed, error)) *HaltableEngine {
	return &HaltableEngine{engine: engine, cleanup: cleanup}
}

// Halt stops all programming for good and removes what the agent owns from the kernel. It is what
// `agent --cleanup` asks of a running agent before the install is deleted. Calling it again runs the cleanup
// again (it is idempotent), so a failed cleanup can be retried.
func (h *HaltableEngine) Halt(ctx context.Context) (syncer.Removed, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.halted = true
	return h.cleanup(ctx)
}

// Halted reports whether Halt was called.
func (h *HaltableEngine) Halted() bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.halted
}

// ReadyCheck is a healthz.Checker: not ready once halted, so the uninstall shows in `kubectl get pods`.
func (h *HaltableEngine) ReadyCheck(*http.Request) error {
	if h.Halted() {
		return ErrHalted
	}
	return nil
}

// pass runs f unless halted.
func (h *HaltableEngine) pass(f func() error) error {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if h.halted {
		return nil
	}
	return f()
}

// Adopt implements Engine.
func (h *HaltableEngine) Adopt(ctx context.Context) error {
	return h.pass(func() error { return h.engine.Adopt(ctx) })
}

// SyncService implements Engine.
func (h *HaltableEngine) SyncService(ctx context.Context, key string, state desired.State) (syncer.Result, error) {
	var res syncer.Result
	err := h.pass(func() (err error) {
		res, err = h.engine.SyncService(ctx, key, state)
		return err
	})
	return res, err
}

// Retain implements Engine.
func (h *HaltableEngine) Retain(ctx context.Context, key string, vips []netip.Addr) (syncer.Result, error) {
	var res syncer.Result
	err := h.pass(func() (err error) {
		res, err = h.engine.Retain(ctx, key, vips)
		return err
	})
	return res, err
}

// Audit implements Engine.
func (h *HaltableEngine) Audit(ctx context.Context) error {
	return h.pass(func() error { return h.engine.Audit(ctx) })
}

// SetPodCIDRs implements Engine.
func (h *HaltableEngine) SetPodCIDRs(ctx context.Context, cidrs []netip.Prefix) error {
	return h.pass(func() error { return h.engine.SetPodCIDRs(ctx, cidrs) })
}

// CheckDrift implements Engine. A halted engine reports no drift, so the canary never puts anything back.
func (h *HaltableEngine) CheckDrift(ctx context.Context) (syncer.Drift, error) {
	var d syncer.Drift
	err := h.pass(func() (err error) {
		d, err = h.engine.CheckDrift(ctx)
		return err
	})
	return d, err
}

// Resync implements Engine.
func (h *HaltableEngine) Resync(ctx context.Context) error {
	return h.pass(func() error { return h.engine.Resync(ctx) })
}
