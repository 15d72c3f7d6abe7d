package sync

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

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
	s.world.Lock()
	defer s.world.Unlock()
	log := logr.FromContextOrDiscard(ctx)
	snap, err := s.readKernel(s.claimedVIPs())
	if err != nil {
		return fmt.Errorf("sync: cleanup: reading the kernel's state: %w", err)
	}
	var errs []error
	for _, v := range sortedVIPs(snap.servers) {
		for _, k := range sortedKeys(snap.servers[v]) {
			op := plan.Op{Kind: plan.DeleteService, Service: snap.servers[v][k].svc}
			if err := s.execOp(log, "", op); err != nil && !errors.Is(err, ipvs.ErrNotFound) {
				errs = append(errs, err)
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("sync: cleanup: %w", errors.Join(errs...))
	}
	if err := s.vips.DeleteInterface(); err != nil && !errors.Is(err, unix.ENODEV) {
		errs = append(errs, fmt.Errorf("sync: cleanup: dummy interface: %w", err))
	}
	if s.rules != nil {
		if err := s.rules.Delete(); err != nil {
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
	s.elements.clusterIPs, s.elements.endpoints, s.elements.have = map[netip.Addr]int{}, map[netip.Addr]int{}, newElementSet()
	s.elements.mu.Unlock()
	// What the agent programmed is gone: a later SyncService must Adopt again first.
	s.adopted.Store(false)
	return errors.Join(errs...)
}
