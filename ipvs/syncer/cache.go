package syncer

import (
	"net/netip"
	"time"

	"k8s.io/apimachinery/pkg/util/sets"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
	"github.com/ipvs-operator/ipvs-operator/ipvs/plan"
)

// entry is the cached model of one Service: what it wants and what the kernel holds for it.
type entry struct {
	key string
	// want is the last desired state SyncService was given, re-applied by Audit.
	want plan.Desired
	// vips are the VIPs this Service owns (s.vipOwner agrees), bound or not yet.
	vips sets.Set[netip.Addr]
	// servers are the virtual servers on those VIPs as the kernel holds them.
	servers map[ipvs.ServiceKey]*server
	// dirty means the last sync failed part-way: the cache may be wrong for this Service, so the next sync
	// re-reads its virtual servers from the kernel first.
	dirty bool
	// elements is what this Service contributes to the nftables sets, as last applied.
	elements appliedElements
	// counts is this Service's contribution to the gauges, as last reported.
	counts counts
	// gen changes (under s.mu, from the Syncer-wide counter) at the end of every sync of the entry. The
	// audit records it before reading the kernel and compares it after: an entry synced meanwhile may be
	// newer than the snapshot, which must then not overwrite its cache.
	gen uint64
}

func newEntry(key string) *entry {
	return &entry{key: key, vips: sets.New[netip.Addr](), servers: map[ipvs.ServiceKey]*server{}}
}

// empty reports whether the entry holds nothing and can be forgotten.
func (e *entry) empty() bool {
	return e.want.IsZero() && e.vips.Len() == 0 && len(e.servers) == 0 && e.elements.len() == 0 && !e.dirty
}

// server is a virtual server as the kernel holds it.
type server struct {
	svc   ipvs.Service
	dests map[ipvs.DestinationKey]*dest
}

func newServer(svc ipvs.Service) *server {
	return &server{svc: svc, dests: map[ipvs.DestinationKey]*dest{}}
}

// dest is a real server as the kernel holds it, with when the agent started draining it.
type dest struct {
	ipvs.ObservedDestination
	drainingSince time.Time
}

// setObserved replaces the server's real servers with what the kernel just reported, keeping the drain
// start of those still at weight 0; a weight-0 real server seen for the first time drains from now.
func (sv *server) setObserved(observed []ipvs.ObservedDestination, now time.Time) {
	old := sv.dests
	sv.dests = make(map[ipvs.DestinationKey]*dest, len(observed))
	for _, o := range observed {
		d := &dest{ObservedDestination: o}
		if o.Weight == 0 {
			d.drainingSince = now
			if prev, ok := old[o.DestinationKey]; ok && !prev.drainingSince.IsZero() {
				d.drainingSince = prev.drainingSince
			}
		}
		sv.dests[o.DestinationKey] = d
	}
}

func (sv *server) observed() plan.ObservedServer {
	o := plan.ObservedServer{Service: sv.svc, Destinations: make([]plan.ObservedDestination, 0, len(sv.dests))}
	for _, d := range sv.dests {
		o.Destinations = append(o.Destinations, plan.ObservedDestination{ObservedDestination: d.ObservedDestination, DrainingSince: d.drainingSince})
	}
	return o
}

// counts are gauge values: virtual servers, and real servers taking traffic or draining at weight 0.
type counts struct {
	servers, active, draining int
}

func (c counts) add(o counts) counts {
	return counts{c.servers + o.servers, c.active + o.active, c.draining + o.draining}
}

func (c counts) sub(o counts) counts {
	return counts{c.servers - o.servers, c.active - o.active, c.draining - o.draining}
}

func countServers(servers map[ipvs.ServiceKey]*server) counts {
	c := counts{servers: len(servers)}
	for _, sv := range servers {
		for _, d := range sv.dests {
			if d.Weight > 0 {
				c.active++
			} else {
				c.draining++
			}
		}
	}
	return c
}
