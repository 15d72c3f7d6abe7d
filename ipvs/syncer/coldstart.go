package syncer

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"k8s.io/apimachinery/pkg/util/sets"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
	"github.com/ipvs-operator/ipvs-operator/ipvs/plan"
)

// coldChunk is how many Services' elements one nftables transaction of finishColdStart carries. At 10,000
// Services the per-Service transactions (a few Services each, in group commits) cost 11 CPU seconds of a
// cold start in the lab VM; a transaction's fixed cost is paid once per chunk instead. A chunk of 1,000
// Services of 5 endpoints is about 7,000 elements, far below what one netlink batch may carry.
const coldChunk = 1000

// coldBinders is how many Services finishColdStart binds at once. The kernel takes the RTNL lock for each
// address, so more would only queue there; two keep the encoding of one request beside the other's call.
const coldBinders = 2

// finishColdStart ends a cold start (Options.BatchColdStart): every Service a SyncService programmed since
// Adopt holds its virtual servers but neither its nftables elements nor its bound VIPs. It commits those
// elements in transactions of coldChunk Services, then syncs each of these Services again, which now only
// binds its VIPs (or, for a Service whose chunk the kernel refused, commits its own elements first, and binds
// nothing if that fails too: fail closed, as SyncService). It runs with world held exclusively, so no sync
// runs meanwhile; the Services' own later syncs take the normal path.
//
// It reports whether the audit's read may be skipped: Adopt found nothing of the agent's in the kernel and
// every sync since succeeded, so there is nothing to sweep and nothing to repair. Otherwise the audit
// runs in full right after.
func (s *Syncer) finishColdStart(ctx context.Context) (skipRead bool, err error) {
	s.world.Lock()
	defer s.world.Unlock()
	s.cold.Store(false)
	s.mu.Lock()
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range s.deferred {
			if !yield(k) {
				return
			}
		}
	})
	s.deferred = sets.New[string]()
	var entries []*entry
	for _, k := range keys {
		if e := s.entries[k]; e != nil {
			entries = append(entries, e)
		}
	}
	s.mu.Unlock()

	committed := entries
	if s.rules != nil {
		committed = nil
		for chunk := range slices.Chunk(entries, coldChunk) {
			if s.commitCold(chunk) {
				committed = append(committed, chunk...)
			}
		}
	}
	s.prebind(committed)

	errs := make([]error, len(entries))
	var wg sync.WaitGroup
	next := make(chan int)
	for range coldBinders {
		wg.Go(func() {
			for i := range next {
				e := entries[i]
				l := s.keyLock(e.key)
				l.Lock()
				_, errs[i] = s.syncLocked(ctx, e.key, e.want)
				l.Unlock()
			}
		})
	}
	for i := range entries {
		next <- i
	}
	close(next)
	wg.Wait()
	s.unbindUntaken()
	if err := errors.Join(errs...); err != nil {
		return false, fmt.Errorf("sync: cold start: %w", err)
	}

	s.mu.Lock()
	clean := len(s.orphans) == 0
	for _, e := range s.entries {
		clean = clean && !e.dirty
	}
	for v := range s.bound {
		_, owned := s.vipOwner[v]
		clean = clean && owned
	}
	s.mu.Unlock()
	return clean, nil
}

// prebind binds, in batches (ipvs.VIPBatcher), the VIPs that the syncs of these Services, whose elements are
// committed, are about to bind, and records the outcomes for them (takePrebound). The VIPs are those their
// plans bind, on which a virtual server exists, as the applier binds them.
func (s *Syncer) prebind(entries []*entry) {
	b, ok := s.vips.(ipvs.VIPBatcher)
	if !ok || len(entries) == 0 {
		return
	}
	now := s.clock.Now()
	var vips []netip.Addr
	for _, e := range entries {
		for _, op := range plan.Compute(e.want, s.observed(e), now).Ops {
			if op.Kind != plan.BindVIP || !serversOn(e.servers, op.VIP) {
				continue
			}
			s.mu.Lock()
			owned := s.vipOwner[op.VIP] == e.key
			s.mu.Unlock()
			if owned {
				vips = append(vips, op.VIP)
			}
		}
	}
	errs := b.BindAll(vips)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.prebound = make(map[netip.Addr]error, len(vips))
	for i, v := range vips {
		s.prebound[v] = errs[i]
	}
}

// unbindUntaken ends prebind's bindings: a VIP bound ahead that no sync took (none is expected; a sync
// cut short by the end of ctx) is unbound again, since no sync checked its elements; if that fails, the
// cache records it as bound and the audit decides.
func (s *Syncer) unbindUntaken() {
	s.mu.Lock()
	untaken := s.prebound
	s.prebound = nil
	s.mu.Unlock()
	for v, err := range untaken {
		if err != nil {
			continue
		}
		if err := s.vips.Unbind(v); err != nil {
			s.mu.Lock()
			s.bound.Insert(v)
			s.mu.Unlock()
		}
	}
}

// takePrebound returns the outcome of v's bind if prebind made it, once.
func (s *Syncer) takePrebound(v netip.Addr) (error, bool) { //nolint:revive // (outcome, found), like a map read
	s.mu.Lock()
	defer s.mu.Unlock()
	err, ok := s.prebound[v]
	if ok {
		delete(s.prebound, v)
	}
	return err, ok
}

// commitCold commits the elements of a chunk of cold Services in one transaction and reports whether the
// kernel took it; if it refused it, each Service is left to its own sync (which commits its elements alone
// before binding).
func (s *Syncer) commitCold(chunk []*entry) bool {
	batch := make([]*elementChange, 0, len(chunk))
	for _, e := range chunk {
		batch = append(batch, newElementChange(e, contribution(e, e.want)))
	}
	r := &s.elements
	r.mu.Lock()
	defer r.mu.Unlock()
	return s.commitLocked(batch) == nil // on failure the counts are undone and each Service's sync retries its own
}
