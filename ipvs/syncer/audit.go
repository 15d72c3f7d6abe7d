package syncer

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/util/sets"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
	"github.com/ipvs-operator/ipvs-operator/ipvs/plan"
)

// ErrAuditPreempted is returned by an Audit that stopped early because Resync asked for the kernel to be
// re-read at once; the resync does the whole audit's work.
var ErrAuditPreempted = errors.New("sync: audit preempted by a resync after drift")

// AuditReport is what one audit found different from what the agent last programmed, and repaired.
type AuditReport struct {
	// Services is how many Services' kernel state had drifted (a virtual server, real server, weight,
	// scheduler or VIP binding differed from the cache) and was re-applied.
	Services int
	// Reread is how many Services were synced while the kernel was read: the snapshot may be older than
	// their sync, so their virtual servers were re-read on their own instead (not counted in Services).
	Reread int
	// Orphans is how many virtual servers on VIPs no Service claims were deleted; VIPs how many such VIPs
	// were unbound.
	Orphans, VIPs int
	// Elements is how many nftables set elements were missing (put back) or unneeded (removed).
	Elements int
	// Ops is the number of kernel operations (IPVS and VIP changes) the repairs made.
	Ops int
}

// Findings is the number of things the audit found wrong.
func (r AuditReport) Findings() int { return r.Services + r.Orphans + r.VIPs + r.Elements }

// sweeper is the owner the sweep records for a VIP while it removes what is on it, so that no Service can
// claim the VIP halfway through (a Service key is "namespace/name"; this cannot be one).
const sweeper = "(audit sweep)"

// Audit re-reads the whole kernel and repairs drift: a flushed table (`ipvsadm -C`), a deleted VIP or
// dummy interface, a changed weight, a removed nftables element. It re-applies the last desired state of
// every Service that needs it against the fresh read, then removes what the agent owns but no Service
// wants: virtual servers on unclaimed VIPs, those VIPs, and unneeded set elements.
//
// It does not stop the world: the kernel is read with no lock held, and each Service is then repaired under
// its own key lock only, so SyncService calls for other Services go on meanwhile. A Service synced while
// the kernel was being read is re-read on its own rather than given the (possibly older) snapshot, and the
// sweep reserves each unclaimed VIP while it empties it, so that it never removes what a Service claimed
// meanwhile. Audits run one at a time.
//
// Its reads are one of each kind, and none holds a lock that a sync waits for: the nftables sets once (an
// element a sync updates during the read is judged by what the sync recorded, not by the read), the
// addresses, the virtual servers, and, with many of them, every real server in one dump (DestinationDumper;
// otherwise one read per virtual server). A Service whose kernel state matches the cache and whose last sync
// did all it wanted is not re-applied: that would plan nothing.
//
// Because of that sweep, the first Audit after Adopt must wait until every existing Service has been synced
// once. It costs a full dump: run it every minute or so, not per change; CheckDrift is the cheap check.
// Errors of individual Services are joined; the others are still repaired.
func (s *Syncer) Audit(ctx context.Context) error {
	if !s.adopted.Load() {
		return ErrNotAdopted
	}
	s.auditMu.Lock()
	defer s.auditMu.Unlock()
	s.preempt.Store(false)
	var errs []error
	if s.cold.Load() {
		skipRead, err := s.finishColdStart(ctx)
		if err == nil && skipRead {
			s.metrics.AuditDone(AuditReport{})
			return nil
		}
		// Some Service's sync failed: the full audit below re-applies it.
		errs = append(errs, err)
	}
	s.world.RLock()
	defer s.world.RUnlock()
	log := logr.FromContextOrDiscard(ctx)

	if err := s.prepare(); err != nil {
		return err
	}
	// Generations first, then the reads: an entry whose generation is unchanged afterwards was not synced
	// at any time during them, so the snapshot is at least as new as its cache.
	gens, claimed := s.generations()
	var rep AuditReport
	// The sets first: a real server the repairs below put back must find its hairpin element there. If
	// they cannot be repaired, neither is anything else (fail closed): Services would be re-applied
	// against sets the cache believes complete, and real servers restored without their elements. Their
	// ClusterIPs also tell which virtual servers are the agent's.
	clusterIPs, n, err := s.auditElements()
	if err != nil {
		return fmt.Errorf("sync: audit: nftables sets: %w", err)
	}
	rep.Elements += n
	snap, err := s.readTables(claimed, clusterIPs)
	if err != nil {
		return fmt.Errorf("sync: audit: reading the kernel's state: %w", err)
	}

	now := s.clock.Now()
	for _, key := range slices.Sorted(maps.Keys(gens)) {
		if s.preempt.Load() {
			return ErrAuditPreempted
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := s.auditService(ctx, key, gens[key], snap, now, &rep); err != nil {
			errs = append(errs, err)
		}
	}
	if err := s.sweep(ctx, snap, &rep); err != nil {
		errs = append(errs, err)
	}
	if n, err := s.reconcileElements(true); err != nil {
		errs = append(errs, fmt.Errorf("sync: audit: nftables sets: %w", err))
	} else {
		rep.Elements += n
	}
	s.metrics.AuditDone(rep)
	if rep.Findings() > 0 {
		log.Info("Audit repaired drift", "services", rep.Services, "reread", rep.Reread, "orphans", rep.Orphans,
			"vips", rep.VIPs, "elements", rep.Elements, "ops", rep.Ops)
	}
	return errors.Join(errs...)
}

// generations returns every entry's generation and the VIPs Services claim.
func (s *Syncer) generations() (map[string]uint64, []netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	gens := make(map[string]uint64, len(s.entries))
	for k, e := range s.entries {
		gens[k] = e.gen
	}
	claimed := make([]netip.Addr, 0, len(s.vipOwner))
	for v := range s.vipOwner {
		claimed = append(claimed, v)
	}
	return gens, claimed
}

// auditService repairs one Service under its key lock: it installs the snapshot's view of the Service
// in the cache (or, if the Service was synced after gen, marks it for a re-read of its own virtual
// servers) and re-applies its last desired state.
func (s *Syncer) auditService(ctx context.Context, key string, gen uint64, snap snapshot, now time.Time, rep *AuditReport) error {
	l := s.keyLock(key)
	l.Lock()
	defer l.Unlock()
	s.mu.Lock()
	e := s.entries[key]
	if e == nil {
		s.mu.Unlock()
		return nil // removed meanwhile: nothing of it is left to repair
	}
	drift, reread := false, e.gen != gen
	settled := !reread && s.settledLocked(e)
	if reread {
		e.dirty = true
	} else {
		drift = s.installEntryLocked(e, snap, now)
	}
	want := e.want
	s.mu.Unlock()
	if settled && !drift {
		// The kernel holds what the last sync left, and that sync did all it wanted: re-applying its
		// desired state would plan nothing. This is most Services of most audits, and skipping them
		// halves an audit's CPU at scale, which the Services' syncs share.
		return nil
	}

	res, err := s.syncLocked(ctx, key, want)
	rep.Ops += res.Ops
	if reread {
		// Its VIPs were bound again (idempotent, since VIPs are not read one by one): Ops says nothing.
		rep.Reread++
	}
	if drift {
		rep.Services++
	}
	return err
}

// settledLocked reports whether e's last sync did all it wanted: it succeeded (not dirty), no real server
// drains (the audit would end a drain whose time has come), and e owns exactly the VIPs it wants (none held
// by another Service, which the audit would claim once released; none left to release).
func (s *Syncer) settledLocked(e *entry) bool {
	if e.dirty || e.counts.draining > 0 || e.vips.Len() != len(e.want.VIPs) {
		return false
	}
	for _, v := range e.want.VIPs {
		if s.vipOwner[v] != e.key || !e.vips.Has(v) {
			return false
		}
	}
	return true
}

// sweep deletes the virtual servers on VIPs no Service owns, then unbinds those VIPs. Each VIP is reserved
// (owned by the sweeper) while it is emptied: a Service wanting it meanwhile gets ErrConflict and retries,
// rather than seeing its new virtual servers deleted. A VIP whose virtual server cannot be deleted stays
// bound, so the next audit still recognises it as the agent's.
func (s *Syncer) sweep(ctx context.Context, snap snapshot, rep *AuditReport) error {
	log := logr.FromContextOrDiscard(ctx)
	s.mu.Lock()
	candidates := sets.KeySet(snap.servers).Union(snap.bound).Union(sets.KeySet(s.orphans)).Union(s.bound)
	s.mu.Unlock()
	var errs []error
	for _, v := range sortedAddrs(candidates.UnsortedList()) {
		s.mu.Lock()
		if _, owned := s.vipOwner[v]; owned {
			s.mu.Unlock()
			continue
		}
		s.vipOwner[v] = sweeper
		left := map[ipvs.ServiceKey]*server{}
		for _, o := range snap.servers[v] {
			sv := newServer(o.svc)
			sv.setObserved(o.dests, s.clock.Now())
			left[o.svc.ServiceKey] = sv
		}
		for k, sv := range s.orphans[v] {
			left[k] = sv
		}
		bound := snap.bound.Has(v) || s.bound.Has(v)
		s.mu.Unlock()

		// Their ports close before they go (a bound VIP would pass them to the node meanwhile); if that
		// fails, they stay for the next audit.
		if err := s.closePorts(sortedKeys(left)); err != nil {
			errs = append(errs, fmt.Errorf("sync: audit: nftables sets: %w", err))
			s.mu.Lock()
			delete(s.vipOwner, v)
			s.mu.Unlock()
			continue
		}
		for _, k := range sortedKeys(left) {
			op := plan.Op{Kind: plan.DeleteService, Service: left[k].svc}
			err := s.execOp(log, "", op)
			if err != nil && !errors.Is(err, ipvs.ErrNotFound) {
				errs = append(errs, err)
				continue
			}
			rep.Ops++
			if err == nil {
				rep.Orphans++
			}
			delete(left, k)
		}
		unbound := false
		if len(left) == 0 && bound {
			if err := s.execOp(log, "", plan.Op{Kind: plan.UnbindVIP, VIP: v}); err != nil {
				errs = append(errs, err)
			} else {
				rep.Ops++
				rep.VIPs++
				unbound = true
			}
		}

		s.mu.Lock()
		if len(left) > 0 {
			s.orphans[v] = left
		} else {
			delete(s.orphans, v)
		}
		if unbound || !bound {
			s.bound.Delete(v)
		} else {
			s.bound.Insert(v)
		}
		delete(s.vipOwner, v)
		s.mu.Unlock()
	}

	s.mu.Lock()
	s.totals = counts{}
	for _, e := range s.entries {
		s.totals = s.totals.add(e.counts)
	}
	for _, svs := range s.orphans {
		s.totals = s.totals.add(countServers(svs))
	}
	s.publishLocked()
	s.mu.Unlock()
	return errors.Join(errs...)
}

// closePorts removes the port elements of virtual servers no Service counts (orphans about to be swept).
func (s *Syncer) closePorts(keys []ipvs.ServiceKey) error {
	if s.rules == nil {
		return nil
	}
	r := &s.elements
	r.mu.Lock()
	defer r.mu.Unlock()
	var remove ipvs.RuleElements
	for _, k := range keys {
		if r.ports[k] == 0 && r.have.ports.Has(k) {
			remove.Ports = append(remove.Ports, k)
		}
	}
	return s.applyElements(ipvs.RuleElements{}, remove)
}

// execOp makes one kernel call for op outside a Service's sync, counts it and reports it.
func (s *Syncer) execOp(log logr.Logger, key string, op plan.Op) error {
	return s.reportOp(log, key, op, s.kernelCall(op))
}

// reportOp counts and reports a kernel call's outcome, and wraps its error in an OpError.
func (s *Syncer) reportOp(log logr.Logger, key string, op plan.Op, err error) error {
	s.metrics.OpDone(op.Kind, err)
	if l := log.V(2); l.Enabled() {
		l.Info("Kernel operation", "service", key, "op", op.String(), "error", err)
	}
	if err != nil {
		return &OpError{Op: op, Err: err}
	}
	return nil
}

func sortedVIPs[T any](m map[netip.Addr]T) []netip.Addr {
	out := make([]netip.Addr, 0, len(m))
	for v := range m {
		out = append(out, v)
	}
	return sortedAddrs(out)
}

func sortedAddrs(a []netip.Addr) []netip.Addr {
	slices.SortFunc(a, netip.Addr.Compare)
	return a
}

func sortedKeys[T any](m map[ipvs.ServiceKey]T) []ipvs.ServiceKey {
	out := make([]ipvs.ServiceKey, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.SortFunc(out, plan.CompareServiceKeys)
	return out
}
