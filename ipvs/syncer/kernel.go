package syncer

import (
	"errors"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/apimachinery/pkg/util/sets"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
)

// snapshot is what a full read of the kernel found that the agent owns.
type snapshot struct {
	bound sets.Set[netip.Addr]
	// elements are the nftables sets as read by readKernel (Adopt); the audit keeps them apart.
	elements elementSet
	// servers are the virtual servers on each address, one per key: a slice, not a map, since an address
	// holds a port or two; the audit reads 10,000 of them at once, beside the whole cache, and a map per
	// address made the snapshot about 10 MB larger (BenchmarkAudit).
	servers map[netip.Addr][]observedServer
}

type observedServer struct {
	svc   ipvs.Service
	dests []ipvs.ObservedDestination
}

// readKernel reads everything once: the nftables sets, the dummy interface's addresses, and the virtual
// servers the agent owns with their real servers (see readTables).
func (s *Syncer) readKernel(claimed []netip.Addr) (snapshot, error) {
	els := newElementSet()
	if s.rules != nil {
		read, err := s.rules.Elements()
		if err != nil && !errors.Is(err, unix.ENOENT) { // no table: no element
			return snapshot{}, err
		}
		els = elementSetOf(read)
	}
	snap, err := s.readTables(claimed, els.clusterIPs)
	snap.elements = els
	return snap, err
}

// readTables reads the dummy interface's addresses and the virtual servers the agent owns, with their real
// servers. The agent owns a virtual server when its address is bound on the dummy interface, is in the
// ClusterIP set of the agent's own nftables table (clusterIPs; so a VIP someone deleted does not turn its
// virtual server into a stranger), or is claimed by a Service in the cache. Any other virtual server
// belongs to someone else and is not even read. The snapshot's elements are left empty.
func (s *Syncer) readTables(claimed []netip.Addr, clusterIPs sets.Set[netip.Addr]) (snapshot, error) {
	snap := snapshot{elements: newElementSet(), servers: map[netip.Addr][]observedServer{}}
	addrs, err := s.vips.List()
	if err != nil && !errors.Is(err, unix.ENODEV) { // no interface: no VIP
		return snap, err
	}
	snap.bound = sets.New(addrs...)
	ours := snap.bound.Union(clusterIPs).Insert(claimed...)
	svcs, err := s.ipvs.Services()
	if err != nil {
		return snap, err
	}
	// Many virtual servers: one read of every real server when the kernel offers it, rather than one per
	// virtual server (a few: each is read on its own, and other owners' real servers are not even read).
	// A virtual server the dump does not report is read on its own, and so is every one if it fails:
	// slower, never wrong.
	var all map[ipvs.ServiceKey][]ipvs.ObservedDestination
	if d, ok := s.ipvs.(ipvs.DestinationDumper); ok && countOurs(svcs, ours) >= dumpFrom {
		all, _ = d.AllDestinations()
	}
	for _, svc := range svcs {
		if !ours.Has(svc.Address) {
			continue
		}
		dests, ok := all[svc.ServiceKey]
		if !ok {
			dests, err = s.ipvs.Destinations(svc.ServiceKey)
			if errors.Is(err, ipvs.ErrNotFound) {
				continue // deleted between the two reads
			}
			if err != nil {
				return snap, err
			}
		}
		snap.servers[svc.Address] = append(snap.servers[svc.Address], observedServer{svc: svc, dests: dests})
	}
	return snap, nil
}

// dumpFrom is how many of the agent's virtual servers make the audit read the whole table's real servers at
// once. Below it each one's are read on their own: cheap at that size, and only what the agent owns is read
// (a node may hold other owners' virtual servers by the thousand).
const dumpFrom = 32

func countOurs(svcs []ipvs.Service, ours sets.Set[netip.Addr]) int {
	n := 0
	for _, svc := range svcs {
		if ours.Has(svc.Address) {
			n++
		}
	}
	return n
}

// install replaces the whole cache with a snapshot: each Service gets the virtual servers on the VIPs it
// owns, the rest become orphans. Drain start times survive for real servers still at weight 0. Called
// with world held exclusively.
func (s *Syncer) install(snap snapshot, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bound = snap.bound
	s.orphans = map[netip.Addr]map[ipvs.ServiceKey]*server{}
	s.totals = counts{}
	for _, e := range s.entries {
		old := e.servers
		e.servers = map[ipvs.ServiceKey]*server{}
		for v := range e.vips {
			for _, o := range snap.servers[v] {
				k := o.svc.ServiceKey
				sv := old[k]
				if sv == nil {
					sv = newServer(o.svc)
				}
				sv.svc = o.svc
				sv.setObserved(o.dests, now)
				e.servers[k] = sv
			}
		}
		e.dirty = false
		e.counts = countServers(e.servers)
		s.totals = s.totals.add(e.counts)
	}
	for v, svs := range snap.servers {
		if _, owned := s.vipOwner[v]; owned {
			continue
		}
		s.orphans[v] = make(map[ipvs.ServiceKey]*server, len(svs))
		for _, o := range svs {
			sv := newServer(o.svc)
			sv.setObserved(o.dests, now)
			s.orphans[v][o.svc.ServiceKey] = sv
		}
		s.totals = s.totals.add(countServers(s.orphans[v]))
	}
	s.publishLocked()

	s.elements.mu.Lock()
	s.elements.have = snap.elements
	s.elements.mu.Unlock()
}

// installEntryLocked replaces one Service's cache with what a snapshot found on its VIPs: its virtual
// servers and whether each VIP is bound. It reports whether the kernel differed from the cache: drift.
// Called with e's key lock and s.mu held, and only when e was not synced since the snapshot was taken.
func (s *Syncer) installEntryLocked(e *entry, snap snapshot, now time.Time) bool {
	if s.refreshEntryLocked(e, snap, now) {
		return false
	}
	drift := false
	old := e.servers
	e.servers = map[ipvs.ServiceKey]*server{}
	for v := range e.vips {
		if b := snap.bound.Has(v); b != s.bound.Has(v) {
			drift = true
			if b {
				s.bound.Insert(v)
			} else {
				s.bound.Delete(v)
			}
		}
		for _, o := range snap.servers[v] {
			k := o.svc.ServiceKey
			sv := old[k]
			if sv == nil {
				sv = newServer(o.svc)
				drift = true
			} else if sv.svc != o.svc || !sameDests(sv.dests, o.dests) {
				drift = true
			}
			sv.svc = o.svc
			sv.setObserved(o.dests, now)
			e.servers[k] = sv
		}
	}
	for k := range old {
		if _, ok := e.servers[k]; !ok {
			drift = true
		}
	}
	e.dirty = false
	return drift
}

// refreshEntryLocked is installEntryLocked's common case, without allocating: when the snapshot holds
// exactly e's cached virtual servers and real servers, with the same VIP bindings, it only copies the
// connection counts into the cache and reports true. Every audit used to rebuild every Service's maps: at
// 10,000 Services, about 15 MB of garbage per audit for nothing changed.
func (s *Syncer) refreshEntryLocked(e *entry, snap snapshot, now time.Time) bool {
	n := 0
	for v := range e.vips {
		if snap.bound.Has(v) != s.bound.Has(v) {
			return false
		}
		for _, o := range snap.servers[v] {
			sv := e.servers[o.svc.ServiceKey]
			if sv == nil || sv.svc != o.svc || !sameDests(sv.dests, o.dests) {
				return false
			}
			n++
		}
	}
	if n != len(e.servers) {
		return false
	}
	for v := range e.vips {
		for _, o := range snap.servers[v] {
			sv := e.servers[o.svc.ServiceKey]
			for _, od := range o.dests {
				d := sv.dests[od.DestinationKey]
				d.DestinationStats = od.DestinationStats
				if d.Weight == 0 && d.drainingSince.IsZero() {
					d.drainingSince = now
				}
			}
		}
	}
	e.dirty = false
	return true
}

// sameDests reports whether the cache's real servers are the observed ones with the same weights
// (connection counts are not the agent's to keep).
func sameDests(cached map[ipvs.DestinationKey]*dest, observed []ipvs.ObservedDestination) bool {
	if len(cached) != len(observed) {
		return false
	}
	for _, o := range observed {
		if d, ok := cached[o.DestinationKey]; !ok || d.Destination != o.Destination {
			return false
		}
	}
	return true
}

func (s *Syncer) claimedVIPs() []netip.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]netip.Addr, 0, len(s.vipOwner))
	for v := range s.vipOwner {
		out = append(out, v)
	}
	return out
}
