package syncer

import (
	"maps"
	"slices"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
	"github.com/ipvs-operator/ipvs-operator/ipvs/plan"
)

// Programmed returns the virtual servers the engine believes it holds in the kernel, from its cache: every
// Service's and the adopted ones no Service has claimed yet, each with its real servers (draining ones at
// weight 0), in a fixed order (ipvs.Render prints them in ipvsadm's). It is what the agent's /debug/ipvs serves.
//
// It reads no kernel state, so a request costs memory copies, not a netlink dump, and cannot be used to
// load the node. Each Service is copied under its own key lock, held briefly (never across another
// Service's kernel I/O), so a Service being synced is shown as it is before or after that sync, never
// half-way; the list as a whole is not one instant's picture, and between audits it can differ from the
// kernel by drift the engine has not seen yet (compare with `ipvsadm -Sn` on the node).
func (s *Syncer) Programmed() []ipvs.VirtualServer {
	s.mu.Lock()
	keys := slices.Sorted(maps.Keys(s.entries))
	var out []ipvs.VirtualServer
	for _, svs := range s.orphans {
		out = appendServers(out, svs)
	}
	s.mu.Unlock()

	for _, key := range keys {
		l := s.keyLock(key)
		l.Lock()
		s.mu.Lock()
		if e := s.entries[key]; e != nil {
			out = appendServers(out, e.servers)
		}
		s.mu.Unlock()
		l.Unlock()
	}
	// A total order first, so that ipvs.Render, whose ipvsadm order is not transitive and so depends on
	// the input's order, prints the same table the same way on every request.
	for _, v := range out {
		slices.SortFunc(v.Destinations, func(a, b ipvs.Destination) int {
			return plan.CompareDestinationKeys(a.DestinationKey, b.DestinationKey)
		})
	}
	slices.SortFunc(out, func(a, b ipvs.VirtualServer) int { return plan.CompareServiceKeys(a.ServiceKey, b.ServiceKey) })
	return out
}

// appendServers appends deep copies of svs to out.
func appendServers(out []ipvs.VirtualServer, svs map[ipvs.ServiceKey]*server) []ipvs.VirtualServer {
	for _, sv := range svs {
		v := ipvs.VirtualServer{Service: sv.svc, Destinations: make([]ipvs.Destination, 0, len(sv.dests))}
		for _, d := range sv.dests {
			v.Destinations = append(v.Destinations, d.Destination)
		}
		out = append(out, v)
	}
	return out
}
