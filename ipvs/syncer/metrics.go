package syncer

import "github.com/ipvs-operator/ipvs-operator/ipvs/plan"

// Metrics receives the engine's counters and gauges; the agent backs it with Prometheus. Calls come from
// several goroutines and must not block.
type Metrics interface {
	// OpDone counts one kernel operation of kind, failed if err is not nil.
	OpDone(kind plan.Kind, err error)
	// SetVirtualServers sets how many virtual servers the agent owns.
	SetVirtualServers(n int)
	// SetRealServers sets how many of the agent's real servers take traffic (weight > 0) and how many drain
	// at weight 0.
	SetRealServers(active, draining int)
	// DriftDetected counts one drift CheckDrift found, by what it found.
	DriftDetected(d Drift)
	// AuditDone reports what one audit (periodic, or a resync after drift) found and repaired.
	AuditDone(r AuditReport)
}

type nopMetrics struct{}

func (nopMetrics) DriftDetected(Drift)     {}
func (nopMetrics) AuditDone(AuditReport)   {}
func (nopMetrics) OpDone(plan.Kind, error) {}
func (nopMetrics) SetVirtualServers(int)   {}
func (nopMetrics) SetRealServers(_, _ int) {}

// recount replaces e's contribution to the gauges and publishes the totals. Called with e's key lock held.
func (s *Syncer) recount(e *entry) {
	c := countServers(e.servers)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.totals = s.totals.sub(e.counts).add(c)
	e.counts = c
	s.publishLocked()
}

// publishLocked sends the totals; under s.mu so that concurrent syncs publish in order.
func (s *Syncer) publishLocked() {
	s.metrics.SetVirtualServers(s.totals.servers)
	s.metrics.SetRealServers(s.totals.active, s.totals.draining)
}
