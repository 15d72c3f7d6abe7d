package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"k8s.io/utils/clock"

	"github.com/ipvs-operator/ipvs-operator/controllers/agent/desired"
	"github.com/ipvs-operator/ipvs-operator/ipvs"
	"github.com/ipvs-operator/ipvs-operator/ipvs/syncer"
)

// The bounds of the agent's probes. The kubelet restarts an agent whose liveness fails and takes a node's
// agent out of `kubectl get pods`' ready count (and out of rollouts' progress) when its readiness fails.
const (
	// DefaultProgramUnreadyAfter is how long the engine may keep failing to program the kernel (every
	// SyncService, or every audit, failing since) before the agent reports not ready: long enough to ride out
	// a burst of transient errors, short enough that a node whose data path stopped following the cluster
	// shows within a couple of minutes, like the services-readable check (DefaultHeldUnreadyAfter).
	DefaultProgramUnreadyAfter = 2 * time.Minute
	// DefaultWedgedAfter is how long one engine call (a sync, an audit, a drift check) may run before the
	// agent reports itself not alive, so that the kubelet restarts it. A netlink call that never returns,
	// or a lock never released, holds every later call of its Service (or of the whole engine) forever,
	// and only a restart gets them going again. The slowest healthy call measured is a full audit at 10,000
	// Services under the lab's emulated CPU (a few seconds of dumps plus the repairs); five minutes is far
	// beyond that.
	DefaultWedgedAfter = 5 * time.Minute
)

// ErrWedged is what the liveness check answers while an engine call has run longer than its bound.
var ErrWedged = errors.New("an engine call has not returned")

// ErrCannotProgram is what the readiness check answers while the engine keeps failing to program.
var ErrCannotProgram = errors.New("the engine keeps failing to program the kernel")

// WatchConfig bounds the WatchedEngine's checks. Zero durations mean the defaults.
type WatchConfig struct {
	Clock clock.PassiveClock
	// UnreadyAfter is how long syncs, or audits, may keep failing before the readiness check fails
	// (DefaultProgramUnreadyAfter). Audits get at least two periods: one failed audit must not make the
	// node unready only because the next one is a long way off.
	UnreadyAfter time.Duration
	// AuditPeriod is the agent's --audit-period.
	AuditPeriod time.Duration
	// WedgedAfter is how long one engine call may run before the liveness check fails (DefaultWedgedAfter).
	WedgedAfter time.Duration
}

// WatchedEngine is the Engine the agent's controllers use in front of the HaltableEngine: it passes every
// call through and watches the outcomes, for the agent's probes. Liveness: no call has been running for
// longer than WedgedAfter. Readiness: neither the syncs nor the audits have been failing for longer than
// UnreadyAfter.
//
// "Failing" means the kernel or the engine refused, not that a Service is wrong: errors that belong to one
// Service's objects (an invalid desired state, a VIP another Service still owns, a scheduler whose module is
// not loaded) are neither failures nor successes here, since they are reported on those Services and one
// bad Service must not take the node out. A failure streak ends at the first success of its kind.
type WatchedEngine struct {
	engine       Engine
	clock        clock.PassiveClock
	unreadyAfter time.Duration
	auditAfter   time.Duration
	wedgedAfter  time.Duration

	mu       sync.Mutex
	next     uint64
	inflight map[uint64]call
	syncs    streak
	audits   streak
}

var _ Engine = (*WatchedEngine)(nil)

// call is one engine call under way.
type call struct {
	verb, key string
	start     time.Time
}

// streak is a run of failures of one kind of call: since when, and the last error. Zero since: none.
type streak struct {
	since time.Time
	err   error
}

// NewWatchedEngine wraps engine.
func NewWatchedEngine(engine Engine, cfg WatchConfig) *WatchedEngine {
	w := &WatchedEngine{engine: engine, clock: cfg.Clock, unreadyAfter: cfg.UnreadyAfter, wedgedAfter: cfg.WedgedAfter,
		inflight: map[uint64]call{}}
	if w.clock == nil {
		w.clock = clock.RealClock{}
	}
	if w.unreadyAfter <= 0 {
		w.unreadyAfter = DefaultProgramUnreadyAfter
	}
	if w.wedgedAfter <= 0 {
		w.wedgedAfter = DefaultWedgedAfter
	}
	w.auditAfter = max(w.unreadyAfter, 2*cfg.AuditPeriod)
	return w
}

// LiveCheck is a healthz.Checker: it fails while an engine call has run longer than the bound.
func (w *WatchedEngine) LiveCheck(*http.Request) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.clock.Now()
	var oldest *call
	for _, c := range w.inflight {
		if oldest == nil || c.start.Before(oldest.start) {
			oldest = &c
		}
	}
	if oldest == nil || now.Sub(oldest.start) <= w.wedgedAfter {
		return nil
	}
	what := oldest.verb
	if oldest.key != "" {
		what += " " + oldest.key
	}
	return fmt.Errorf("%w: %s has run for %s (over %s); %d calls under way",
		ErrWedged, what, now.Sub(oldest.start).Round(time.Second), w.wedgedAfter, len(w.inflight))
}

// ReadyCheck is a healthz.Checker: it fails while the syncs, or the audits, have been failing for longer
// than their bound.
func (w *WatchedEngine) ReadyCheck(*http.Request) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.clock.Now()
	for _, s := range []struct {
		what  string
		st    streak
		after time.Duration
	}{{"syncs", w.syncs, w.unreadyAfter}, {"audits", w.audits, w.auditAfter}} {
		if !s.st.since.IsZero() && now.Sub(s.st.since) > s.after {
			return fmt.Errorf("%w: %s failing for %s (over %s): %w",
				ErrCannotProgram, s.what, now.Sub(s.st.since).Round(time.Second), s.after, s.st.err)
		}
	}
	return nil
}

// watch runs f as one call under way, then records its outcome in st (nil: liveness only).
func (w *WatchedEngine) watch(verb, key string, st *streak, f func() error) error {
	w.mu.Lock()
	id := w.next
	w.next++
	w.inflight[id] = call{verb: verb, key: key, start: w.clock.Now()}
	w.mu.Unlock()

	err := f()

	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.inflight, id)
	if st == nil || objectError(err) {
		return err
	}
	if err == nil {
		*st = streak{}
	} else {
		if st.since.IsZero() {
			st.since = w.clock.Now()
		}
		st.err = err
	}
	return err
}

// objectError reports whether err says nothing about the engine's health: nil is not one; an error of one
// Service's objects, the end of the agent (a cancelled context), or an audit preempted by a resync are.
// A joined error is one only if every part is.
func objectError(err error) bool {
	if err == nil {
		return false
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			if !objectError(e) {
				return false
			}
		}
		return true
	}
	for _, target := range []error{syncer.ErrInvalidDesired, syncer.ErrConflict, ipvs.ErrSchedulerNotFound,
		syncer.ErrAuditPreempted, context.Canceled} {
		if matches(err, target) {
			return true
		}
	}
	return false
}

// matches is errors.Is that does not descend into joined errors, so that objectError judges each part.
func matches(err, target error) bool {
	for err != nil {
		if err == target { //nolint:errorlint // errors.Is by hand, one level at a time: it must not descend into joins
			return true
		}
		if x, ok := err.(interface{ Is(error) bool }); ok && x.Is(target) {
			return true
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			if _, joined := err.(interface{ Unwrap() []error }); joined {
				return objectError(err) // a join inside a wrapper: every part must match
			}
			return false
		}
		err = u.Unwrap()
	}
	return false
}

// Adopt implements Engine.
func (w *WatchedEngine) Adopt(ctx context.Context) error {
	return w.watch("Adopt", "", nil, func() error { return w.engine.Adopt(ctx) })
}

// SyncService implements Engine.
func (w *WatchedEngine) SyncService(ctx context.Context, key string, state desired.State) (syncer.Result, error) {
	var res syncer.Result
	err := w.watch("SyncService", key, &w.syncs, func() (err error) {
		res, err = w.engine.SyncService(ctx, key, state)
		return err
	})
	return res, err
}

// Retain implements Engine.
func (w *WatchedEngine) Retain(ctx context.Context, key string, vips []netip.Addr) (syncer.Result, error) {
	var res syncer.Result
	err := w.watch("Retain", key, &w.syncs, func() (err error) {
		res, err = w.engine.Retain(ctx, key, vips)
		return err
	})
	return res, err
}

// Audit implements Engine.
func (w *WatchedEngine) Audit(ctx context.Context) error {
	return w.watch("Audit", "", &w.audits, func() error { return w.engine.Audit(ctx) })
}

// CheckDrift implements Engine. Its outcome is not a readiness signal: a canary read proves nothing about
// programming, and a failed one is followed by an audit that tells.
func (w *WatchedEngine) CheckDrift(ctx context.Context) (syncer.Drift, error) {
	var d syncer.Drift
	err := w.watch("CheckDrift", "", nil, func() (err error) {
		d, err = w.engine.CheckDrift(ctx)
		return err
	})
	return d, err
}

// Resync implements Engine.
func (w *WatchedEngine) Resync(ctx context.Context) error {
	return w.watch("Resync", "", &w.audits, func() error { return w.engine.Resync(ctx) })
}

// SetPodCIDRs implements Engine.
func (w *WatchedEngine) SetPodCIDRs(ctx context.Context, cidrs []netip.Prefix) error {
	return w.watch("SetPodCIDRs", "", &w.syncs, func() error { return w.engine.SetPodCIDRs(ctx, cidrs) })
}
