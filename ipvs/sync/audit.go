package sync

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/go-logr/logr"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
	"github.com/ipvs-operator/ipvs-operator/ipvs/plan"
)

// Audit re-reads the whole kernel and repairs drift: a flushed table (`ipvsadm -C`), a deleted VIP or
// dummy interface, a changed weight, a removed nftables element. It re-applies every Service's last desired
// state against the fresh read, then removes what the agent owns but no Service wants: virtual servers on
// unclaimed VIPs, those VIPs, and unneeded set elements.
//
// Because of that sweep, the first Audit after Adopt must wait until every existing Service has been synced
// once. Audit runs alone (SyncService calls wait) and costs a full dump: run it every few minutes, not per
// change. Errors of individual Services are joined; the others are still repaired.
func (s *Syncer) Audit(ctx context.Context) error {
	if !s.adopted.Load() {
		return ErrNotAdopted
	}
	s.world.Lock()
	defer s.world.Unlock()
	if err := s.prepare(); err != nil {
		return err
	}
	snap, err := s.readKernel(s.claimedVIPs())
	if err != nil {
		return fmt.Errorf("sync: audit: reading the kernel's state: %w", err)
	}
	s.install(snap, s.clock.Now())

	var errs []error
	for _, key := range s.entryKeys() {
		s.mu.Lock()
		want := s.entries[key].want
		s.mu.Unlock()
		if _, err := s.syncLocked(ctx, key, want); err != nil {
			errs = append(errs, err)
		}
	}
	if err := s.sweep(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := s.reconcileElements(true); err != nil {
		errs = append(errs, fmt.Errorf("sync: audit: nftables sets: %w", err))
	}
	return errors.Join(errs...)
}

func (s *Syncer) entryKeys() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := make([]string, 0, len(s.entries))
	for k := range s.entries {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// sweep deletes orphaned virtual servers, then unbinds VIPs no Service owns and no virtual server is left
// on. Called with world held exclusively.
func (s *Syncer) sweep(ctx context.Context) error {
	log := logr.FromContextOrDiscard(ctx)
	var errs []error
	for _, v := range sortedVIPs(s.orphans) {
		for _, k := range sortedKeys(s.orphans[v]) {
			op := plan.Op{Kind: plan.DeleteService, Service: s.orphans[v][k].svc}
			if err := s.execOp(log, "", op); err != nil && !errors.Is(err, ipvs.ErrNotFound) {
				errs = append(errs, err)
				continue
			}
			delete(s.orphans[v], k)
		}
		if len(s.orphans[v]) == 0 {
			delete(s.orphans, v)
		}
	}
	for _, v := range sortedAddrs(s.bound.UnsortedList()) {
		if _, owned := s.vipOwner[v]; owned || len(s.orphans[v]) > 0 {
			continue
		}
		if err := s.execOp(log, "", plan.Op{Kind: plan.UnbindVIP, VIP: v}); err != nil {
			errs = append(errs, err)
			continue
		}
		s.bound.Delete(v)
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

// execOp makes one kernel call for op outside a Service's sync, counts and reports it.
func (s *Syncer) execOp(log logr.Logger, key string, op plan.Op) error {
	err := s.kernelCall(op)
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
