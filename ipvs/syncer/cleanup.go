package syncer

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/go-logr/logr"
	"golang.org/x/sys/unix"
	"k8s.io/apimachinery/pkg/util/sets"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
	"github.com/ipvs-operator/ipvs-operator/ipvs/plan"
)

// Cleanup removes everything the agent owns: its virtual servers, then the dummy interface with its VIPs,
// then the nftables table; for `agent --cleanup`. It needs no Adopt: it reads the kernel itself, and owns
// what readKernel says the agent owns, so virtual servers someone made on other addresses survive. If a
// virtual server cannot be deleted, the interface and table are kept, so that running Cleanup again still
// recognises it as the agent's.
func (s *Syncer) Cleanup(ctx context.Context) error {
	_, err := s.CleanupReport(ctx)
	return err
}

// Removed is what CleanupReport took out of the kernel, for `agent --cleanup` to tell the user.
type Removed struct {
	// VirtualServers are the agent's virtual servers that were deleted.
	VirtualServers []ipvs.ServiceKey
	// VIPs are the addresses that were bound to the dummy interface when it was deleted.
	VIPs []netip.Addr
	// Interface and Table say that the dummy interface and the nftables table are gone (deleted now, or
	// already absent).
	Interface, Table bool
}

// CleanupReport is Cleanup that also says what it removed; on error, Removed lists what was removed
// before the failure.
func (s *Syncer) CleanupReport(ctx context.Context) (Removed, error) {
	s.world.Lock()
	defer s.world.Unlock()
	log := logr.FromContextOrDiscard(ctx)
	var removed Removed
	snap, err := s.readKernel(s.claimedVIPs())
	if err != nil {
		return removed, fmt.Errorf("sync: cleanup: reading the kernel's state: %w", err)
	}
	var errs []error
	for _, v := range sortedVIPs(snap.servers) {
		svs := slices.SortedFunc(slices.Values(snap.servers[v]), func(a, b observedServer) int {
			return plan.CompareServiceKeys(a.svc.ServiceKey, b.svc.ServiceKey)
		})
		for _, o := range svs {
			k := o.svc.ServiceKey
			op := plan.Op{Kind: plan.DeleteService, Service: o.svc}
			err := s.execOp(log, "", op)
			switch {
			case err == nil:
				removed.VirtualServers = append(removed.VirtualServers, k)
			case !errors.Is(err, ipvs.ErrNotFound):
				errs = append(errs, err)
			}
		}
	}
	if len(errs) > 0 {
		return removed, fmt.Errorf("sync: cleanup: %w", errors.Join(errs...))
	}
	if err := s.vips.DeleteInterface(); err != nil && !errors.Is(err, unix.ENODEV) {
		errs = append(errs, fmt.Errorf("sync: cleanup: dummy interface: %w", err))
	} else {
		removed.Interface = true
		if len(snap.bound) > 0 {
			removed.VIPs = sortedVIPs(snap.bound)
		}
	}
	removed.Table = true
	if s.rules != nil {
		if err := s.rules.Delete(); err != nil {
			removed.Table = false
			errs = append(errs, fmt.Errorf("sync: cleanup: nftables table: %w", err))
		}
	}

	s.mu.Lock()
	s.entries = map[string]*entry{}
	s.vipOwner = map[netip.Addr]string{}
	s.bound = sets.New[netip.Addr]()
	s.orphans = map[netip.Addr]map[ipvs.ServiceKey]*server{}
	s.totals = counts{}
	s.publishLocked()
	s.mu.Unlock()
	s.elements.mu.Lock()
	fresh := newRuleSets()
	s.elements.clusterIPs, s.elements.endpoints, s.elements.ports, s.elements.have = fresh.clusterIPs, fresh.endpoints, fresh.ports, fresh.have
	s.elements.mu.Unlock()
	// What the agent programmed is gone: a later SyncService must Adopt again first.
	s.adopted.Store(false)
	return removed, errors.Join(errs...)
}
