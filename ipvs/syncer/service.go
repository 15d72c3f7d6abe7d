package syncer

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"k8s.io/apimachinery/pkg/util/sets"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
	"github.com/ipvs-operator/ipvs-operator/ipvs/plan"
)

// SyncService makes the kernel hold want for the Service key ("namespace/name"); an empty want removes
// everything the Service had. Its cost is proportional to that Service: the plan is computed against the
// cache, and the only kernel reads are of virtual servers whose real servers are being retired (their
// connection counts), or of this Service's virtual servers after an earlier failure.
//
// An error concerns this Service only (it may wrap several OpErrors, ErrConflict or ErrInvalidDesired); the
// Service is then re-read from the kernel on its next call. Result.RequeueAfter asks for another call while
// real servers drain.
func (s *Syncer) SyncService(ctx context.Context, key string, want plan.Desired) (Result, error) {
	if !s.adopted.Load() {
		return Result{}, ErrNotAdopted
	}
	if err := validate(want); err != nil {
		return Result{}, fmt.Errorf("service %s: %w", key, err)
	}
	s.world.RLock()
	defer s.world.RUnlock()
	l := s.keyLock(key)
	l.Lock()
	defer l.Unlock()
	return s.syncLocked(ctx, key, want)
}

// syncLocked is SyncService with the locks held: key's lock and world shared, or world exclusively.
func (s *Syncer) syncLocked(ctx context.Context, key string, want plan.Desired) (Result, error) {
	now := s.clock.Now()
	e, effective, conflicts := s.claim(key, want)
	defer s.touch(e)

	var errs []error
	fresh := sets.New[ipvs.ServiceKey]()
	if e.dirty {
		if err := s.reread(e, effective, fresh, now); err != nil {
			return Result{}, fmt.Errorf("service %s: %w", key, err)
		}
	}
	if err := s.refreshDrains(e, effective, fresh, now); err != nil {
		e.dirty = true
		return Result{}, fmt.Errorf("service %s: %w", key, err)
	}

	a := s.newApplier(ctx, e, now)
	// A Service none of whose VIPs is bound yet (every Service of a cold start) is reached by no client:
	// its elements go in with its ports, in one nftables transaction instead of two, before its VIPs are
	// bound. At 10,000 Services the second transaction was a fifth of the programming time.
	unreached := s.unreached(e, effective)
	if !unreached {
		if err := s.growElements(e, effective); err != nil {
			// Fail closed: nothing may start routing to an endpoint or a ClusterIP whose hairpin/guard
			// elements are not in the sets. Operations that need only what the sets already hold (removals,
			// drains, weights of known endpoints) still run; the error makes the caller retry.
			errs = append(errs, err)
			in := e.elements.set()
			a.inSets = &in
		}
	}
	p := plan.Compute(effective, s.observed(e), now)
	ops, binds := splitBinds(p.Ops)
	cold := unreached && s.cold.Load()
	if cold {
		a.prefetch(ops)
	}
	a.run(ctx, ops)
	a.done = nil // only for the ops they were made for: a second plan calls the kernel again
	if a.replan && len(a.errs) == 0 {
		p = plan.Compute(effective, s.observed(e), now)
		ops, binds = splitBinds(p.Ops)
		a.run(ctx, ops)
	}
	// Release first: a VIP given up leaves the ClusterIP set with it.
	s.release(e, effective)
	if cold {
		// A cold start: the first audit commits the elements of every Service at once and then binds.
		s.mu.Lock()
		s.deferred.Insert(key)
		s.mu.Unlock()
		binds = nil
	} else if err := s.updateElements(e, effective); err != nil {
		errs = append(errs, err)
		if unreached {
			// Its ClusterIPs and endpoints are not in the sets: binding would let clients reach real
			// servers the hairpin set does not know. The retry binds them once the sets hold them.
			binds = nil
		}
	}
	// Bind last: the ports of the new virtual servers are open now, so the first client of a new VIP is
	// served, not refused by the port filter.
	a.run(ctx, binds)
	errs = append(errs, a.errs...)
	e.dirty = len(errs) > 0
	s.recount(e)
	s.forgetIfEmpty(e)

	res := Result{Ops: a.ops}
	if err := errors.Join(append(errs, conflicts...)...); err != nil {
		return res, fmt.Errorf("service %s: %w", key, err)
	}
	if !p.RecheckAt.IsZero() {
		res.RequeueAfter = max(min(p.RecheckAt.Sub(now), s.poll), time.Millisecond)
	}
	return res, nil
}

// claim records want in key's entry and takes ownership of its VIPs, with the virtual servers a previous
// agent left on them. It returns the part of want this Service may program: without the VIPs (and their
// virtual servers) that another Service owns, which are reported as ErrConflict.
func (s *Syncer) claim(key string, want plan.Desired) (*entry, plan.Desired, []error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entries[key]
	if e == nil {
		e = newEntry(key)
		s.entries[key] = e
	}
	e.want = want
	var taken sets.Set[netip.Addr]
	var errs []error
	for _, v := range want.VIPs {
		owner, owned := s.vipOwner[v]
		switch {
		case owned && owner != key:
			if taken == nil {
				taken = sets.New[netip.Addr]()
			}
			taken.Insert(v)
			errs = append(errs, fmt.Errorf("%w: %s belongs to %s", ErrConflict, v, owner))
		case !owned:
			s.vipOwner[v] = key
			e.vips.Insert(v)
			for k, sv := range s.orphans[v] {
				e.servers[k] = sv
			}
			s.totals = s.totals.sub(countServers(s.orphans[v]))
			delete(s.orphans, v)
		}
	}
	if taken == nil {
		return e, want, nil
	}
	effective := plan.Desired{DrainTimeout: want.DrainTimeout}
	for _, v := range want.VIPs {
		if !taken.Has(v) {
			effective.VIPs = append(effective.VIPs, v)
		}
	}
	for _, sv := range want.Servers {
		if !taken.Has(sv.Address) {
			effective.Servers = append(effective.Servers, sv)
		}
	}
	return e, effective, errs
}

// reread replaces the cache of e's virtual servers with the kernel's, after a failed sync left it in doubt.
// It reads only this Service's virtual servers. VIPs are not listed (a dump of every address): the desired
// ones are bound again and the others unbound again, both of which are idempotent.
func (s *Syncer) reread(e *entry, want plan.Desired, fresh sets.Set[ipvs.ServiceKey], now time.Time) error {
	keys := sets.New[ipvs.ServiceKey]()
	for k := range e.servers {
		keys.Insert(k)
	}
	for _, w := range want.Servers {
		keys.Insert(w.ServiceKey)
	}
	for k := range keys {
		obs, err := s.ipvs.Destinations(k)
		if errors.Is(err, ipvs.ErrNotFound) {
			delete(e.servers, k)
			continue
		}
		if err != nil {
			return err
		}
		sv := e.servers[k]
		if sv == nil {
			// Created by a call whose answer was lost; its scheduler is unknown, so the plan sets it again.
			sv = newServer(ipvs.Service{ServiceKey: k})
			e.servers[k] = sv
		}
		sv.setObserved(obs, now)
		fresh.Insert(k)
	}
	wantVIPs := sets.New(want.VIPs...)
	s.mu.Lock()
	defer s.mu.Unlock()
	for v := range e.vips {
		if wantVIPs.Has(v) {
			s.bound.Delete(v)
		} else {
			s.bound.Insert(v)
		}
	}
	return nil
}

// refreshDrains reads the connection counts of the virtual servers that have real servers to retire: they
// decide between draining and deleting. Only TCP virtual servers with a drain timeout need them.
func (s *Syncer) refreshDrains(e *entry, want plan.Desired, fresh sets.Set[ipvs.ServiceKey], now time.Time) error {
	for _, w := range want.Servers {
		sv := e.servers[w.ServiceKey]
		if sv == nil || fresh.Has(w.ServiceKey) || want.DrainTimeoutFor(w.Protocol) <= 0 || !hasStale(sv, w) {
			continue
		}
		obs, err := s.ipvs.Destinations(w.ServiceKey)
		if errors.Is(err, ipvs.ErrNotFound) {
			delete(e.servers, w.ServiceKey) // the plan creates it again
			continue
		}
		if err != nil {
			// Without counts a real server with connections could be cut: do nothing rather than guess.
			return err
		}
		sv.setObserved(obs, now)
	}
	return nil
}

// hasStale reports whether the kernel holds real servers of w that are no longer desired.
func hasStale(sv *server, w ipvs.VirtualServer) bool {
	if len(sv.dests) > len(w.Destinations) {
		return true
	}
	wanted := 0
	for _, d := range w.Destinations {
		if _, ok := sv.dests[d.DestinationKey]; ok {
			wanted++
		}
	}
	return wanted < len(sv.dests)
}

// observed is the plan's view of e: its cached virtual servers and its bound VIPs.
func (s *Syncer) observed(e *entry) plan.Observed {
	o := plan.Observed{Servers: make([]plan.ObservedServer, 0, len(e.servers))}
	s.mu.Lock()
	for v := range e.vips {
		if s.bound.Has(v) {
			o.VIPs = append(o.VIPs, v)
		}
	}
	s.mu.Unlock()
	for _, sv := range e.servers {
		o.Servers = append(o.Servers, sv.observed())
	}
	return o
}

// unreached reports whether no client can reach e's virtual servers before this sync binds its VIPs: none of
// the VIPs it holds or wants is bound. IPVS sees a pod's or an outside client's packet only once its
// destination is a local address, so until then the elements growElements would add first protect nothing.
func (s *Syncer) unreached(e *entry, want plan.Desired) bool {
	if s.rules == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for v := range e.vips {
		if s.bound.Has(v) {
			return false
		}
	}
	for _, v := range want.VIPs {
		if s.bound.Has(v) {
			return false
		}
	}
	return true
}

// release gives up e's VIPs that it no longer wants and that hold nothing any more.
func (s *Syncer) release(e *entry, want plan.Desired) {
	wantVIPs := sets.New(want.VIPs...)
	s.mu.Lock()
	defer s.mu.Unlock()
	for v := range e.vips {
		if !wantVIPs.Has(v) && !s.bound.Has(v) && !serversOn(e.servers, v) {
			s.releaseVIPLocked(e, v)
		}
	}
}

func (s *Syncer) releaseVIPLocked(e *entry, v netip.Addr) {
	if s.vipOwner[v] == e.key {
		delete(s.vipOwner, v)
	}
	e.vips.Delete(v)
}

// touch gives e a new generation: it was synced (see entry.gen).
func (s *Syncer) touch(e *entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen++
	e.gen = s.gen
}

// forgetIfEmpty drops the entry of a Service that holds nothing any more.
func (s *Syncer) forgetIfEmpty(e *entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.empty() && s.entries[e.key] == e {
		delete(s.entries, e.key)
	}
}

func serversOn(servers map[ipvs.ServiceKey]*server, vip netip.Addr) bool {
	for k := range servers {
		if k.Address == vip {
			return true
		}
	}
	return false
}

// validate refuses a desired state that breaks its contract (plan.Desired.Validate), so a broken caller
// cannot program nonsense. The error matches both ErrInvalidDesired and plan.ErrInvalidDesired.
func validate(want plan.Desired) error {
	if err := want.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidDesired, err)
	}
	return nil
}

// splitBinds separates a plan's BindVIP ops from the rest, keeping the order of each. The engine runs the
// binds after the nftables sets are updated (see plan.Compute, phase 3): a VIP is only bound once its
// virtual servers and their port elements exist.
func splitBinds(ops []plan.Op) (rest, binds []plan.Op) {
	for _, op := range ops {
		if op.Kind == plan.BindVIP {
			binds = append(binds, op)
		} else {
			rest = append(rest, op)
		}
	}
	return rest, binds
}
