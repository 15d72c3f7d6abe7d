package syncer

import (
	"context"
	"fmt"
	"slices"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
	"github.com/ipvs-operator/ipvs-operator/ipvs/plan"
)

// Adopt prepares the kernel (creates the dummy interface and the nftables table if missing, never flushing
// either) and reads once what it already holds, so that a restarted agent takes over the state a previous
// one left instead of rebuilding it. Adopted virtual servers and VIPs belong to no Service until a
// SyncService claims them by wanting the VIP; Audit removes what is still unclaimed, so call Audit only
// after every existing Service has been synced once. Virtual servers on addresses that are not the agent's
// are never read nor touched.
//
// A desired real server found at weight 0 gets its weight back on its Service's first sync; an undesired
// one keeps draining, its drain counted from now.
func (s *Syncer) Adopt(_ context.Context) error {
	s.world.Lock()
	defer s.world.Unlock()
	if err := s.prepare(); err != nil {
		return err
	}
	snap, err := s.readKernel(s.claimedVIPs())
	if err != nil {
		return fmt.Errorf("sync: reading the kernel's state: %w", err)
	}
	s.install(snap, s.clock.Now())
	if err := s.openAdoptedPorts(snap); err != nil {
		return fmt.Errorf("sync: nftables sets: %w", err)
	}
	s.cold.Store(s.batchCold && len(snap.servers) == 0 && snap.bound.Len() == 0 && snap.elements.len() == 0)
	s.adopted.Store(true)
	return nil
}

// openAdoptedPorts puts the virtual servers found in the kernel into the port sets where they are missing:
// a table made by an agent without the port filter has the ClusterIPs but no port sets, and once Ensure
// has added the filter every new connection to those ClusterIPs would be refused until each Service is
// synced again. Each of them has its virtual server, so opening it keeps the sets' promise; the first audit
// removes those no Service claims.
func (s *Syncer) openAdoptedPorts(snap snapshot) error {
	if s.rules == nil {
		return nil
	}
	r := &s.elements
	r.mu.Lock()
	defer r.mu.Unlock()
	var add ipvs.RuleElements
	for _, svs := range snap.servers {
		for _, o := range svs {
			if k := o.svc.ServiceKey; !r.have.ports.Has(k) {
				add.Ports = append(add.Ports, k)
			}
		}
	}
	slices.SortFunc(add.Ports, plan.CompareServiceKeys)
	return s.applyElements(add, ipvs.RuleElements{})
}

// prepare creates or repairs the dummy interface and the nftables table. Both calls are idempotent.
func (s *Syncer) prepare() error {
	if err := s.vips.EnsureInterface(); err != nil {
		return fmt.Errorf("sync: dummy interface: %w", err)
	}
	if s.rules == nil {
		return nil
	}
	s.mu.Lock()
	cidrs := s.podCIDRs
	s.mu.Unlock()
	if err := s.rules.Ensure(cidrs); err != nil {
		return fmt.Errorf("sync: nftables table: %w", err)
	}
	return nil
}
