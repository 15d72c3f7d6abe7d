package plan

import (
	"cmp"
	"net/netip"
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/util/sets"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
)

// Plan is the outcome of Compute.
type Plan struct {
	// Ops take the kernel from the observed to the desired state, in a safe order (see Compute).
	Ops []Op
	// RecheckAt is the earliest drain deadline of a real server the plan leaves at weight 0; a new plan
	// computed then deletes it. Zero when nothing is draining.
	RecheckAt time.Time
}

// Compute diffs one Service's desired state against what the kernel holds for it. Ops come in this order,
// so that no packet meets a half-built virtual server and no desired endpoint loses traffic to a removal:
//
//  1. add virtual servers, and update the scheduler or persistence of existing ones in place (IPVS takes a
//     virtual server on an address the node does not hold yet);
//  2. add new real servers and restore the weight of desired ones (including ones draining or adopted at
//     weight 0);
//  3. bind new VIPs: only now does the node accept packets for them, and only VIPs with at least one
//     desired virtual server are bound. A bound VIP passes the packets IPVS does not take to the local
//     stack (the nftables port filter refuses new ones), so a VIP whose virtual servers all failed to be
//     created, or that has none, must not be bound (the caller holds back a bind whose AddService failed). The
//     engine runs the binds after it has opened the new virtual servers' ports in the filter, so that the
//     first client of a new VIP is not refused;
//  4. retire real servers that are no longer desired: TCP ones with connections go to weight 0 first and are
//     deleted once their connections are gone or their drain deadline (DrainingSince + timeout) has passed
//     at now; UDP and SCTP ones, ones without connections, and any when the timeout is 0 are deleted at once;
//  5. delete virtual servers whose port went away (with their real servers);
//  6. unbind VIPs that are no longer desired, or no longer have a desired virtual server.
//
// Within a phase, ops follow want's order (Desired keeps it sorted) and then the sorted observed keys, so
// the same input always gives the same plan. Connection counts are taken from have as given: the caller
// refreshes them for virtual servers with real servers to retire.
func Compute(want Desired, have Observed, now time.Time) Plan {
	var (
		binds, services, adds, retires, unbinds []Op
		recheck                                 time.Time
	)
	wantVIPs := BindableVIPs(want)
	haveVIPs := sets.New(have.VIPs...)
	for _, v := range want.VIPs {
		if wantVIPs.Has(v) && !haveVIPs.Has(v) {
			binds = append(binds, Op{Kind: BindVIP, VIP: v})
			haveVIPs.Insert(v) // a duplicate in want binds once
		}
	}

	haveServers := make(map[ipvs.ServiceKey]*ObservedServer, len(have.Servers))
	for i := range have.Servers {
		haveServers[have.Servers[i].ServiceKey] = &have.Servers[i]
	}
	wantServers := sets.New[ipvs.ServiceKey]()
	for _, w := range want.Servers {
		wantServers.Insert(w.ServiceKey)
		h, ok := haveServers[w.ServiceKey]
		if !ok {
			services = append(services, Op{Kind: AddService, Service: w.Service})
			for _, d := range w.Destinations {
				adds = append(adds, Op{Kind: AddDestination, Service: w.Service, Destination: d})
			}
			continue
		}
		if h.Scheduler != w.Scheduler || h.Persistence != w.Persistence {
			services = append(services, Op{Kind: UpdateService, Service: w.Service})
		}

		haveDests := make(map[ipvs.DestinationKey]*ObservedDestination, len(h.Destinations))
		for i := range h.Destinations {
			haveDests[h.Destinations[i].DestinationKey] = &h.Destinations[i]
		}
		for _, d := range w.Destinations {
			hd, ok := haveDests[d.DestinationKey]
			switch {
			case !ok:
				adds = append(adds, Op{Kind: AddDestination, Service: w.Service, Destination: d})
			case hd.Weight != d.Weight:
				adds = append(adds, Op{Kind: UpdateDestination, Service: w.Service, Destination: d})
			}
			delete(haveDests, d.DestinationKey)
		}

		timeout := want.DrainTimeoutFor(w.Protocol)
		for _, hd := range sortedDestinations(haveDests) {
			op, deadline := retire(w.Service, hd, timeout, now)
			if op.Kind != 0 {
				retires = append(retires, op)
			}
			if !deadline.IsZero() && (recheck.IsZero() || deadline.Before(recheck)) {
				recheck = deadline
			}
		}
	}

	stale := make([]ipvs.Service, 0)
	for k, h := range haveServers {
		if !wantServers.Has(k) {
			stale = append(stale, h.Service)
		}
	}
	slices.SortFunc(stale, func(a, b ipvs.Service) int { return CompareServiceKeys(a.ServiceKey, b.ServiceKey) })
	deletes := make([]Op, 0, len(stale))
	for _, s := range stale {
		deletes = append(deletes, Op{Kind: DeleteService, Service: s})
	}

	for _, v := range sortedAddrs(have.VIPs) {
		if !wantVIPs.Has(v) {
			unbinds = append(unbinds, Op{Kind: UnbindVIP, VIP: v})
		}
	}

	ops := make([]Op, 0, len(binds)+len(services)+len(adds)+len(retires)+len(deletes)+len(unbinds))
	for _, phase := range [][]Op{services, adds, binds, retires, deletes, unbinds} {
		ops = append(ops, phase...)
	}
	return Plan{Ops: ops, RecheckAt: recheck}
}

// BindableVIPs are the desired VIPs that have at least one desired virtual server: the only ones bound.
func BindableVIPs(want Desired) sets.Set[netip.Addr] {
	out := sets.New[netip.Addr]()
	for _, sv := range want.Servers {
		out.Insert(sv.Address)
	}
	return out.Intersection(sets.New(want.VIPs...))
}

// retire decides what happens to a real server that is no longer desired: an op (Kind 0 for none: it keeps
// draining) and, while it stays at weight 0, its drain deadline.
func retire(svc ipvs.Service, d *ObservedDestination, timeout time.Duration, now time.Time) (Op, time.Time) {
	del := Op{Kind: DeleteDestination, Service: svc, Destination: d.Destination}
	if timeout <= 0 || d.ActiveConnections+d.InactiveConnections == 0 {
		return del, time.Time{}
	}
	if d.Weight != 0 {
		quiesce := d.Destination
		quiesce.Weight = 0
		return Op{Kind: UpdateDestination, Service: svc, Destination: quiesce}, now.Add(timeout)
	}
	since := d.DrainingSince
	if since.IsZero() {
		since = now
	}
	deadline := since.Add(timeout)
	if !now.Before(deadline) {
		return del, time.Time{}
	}
	return Op{}, deadline
}

func sortedDestinations(m map[ipvs.DestinationKey]*ObservedDestination) []*ObservedDestination {
	out := make([]*ObservedDestination, 0, len(m))
	for _, d := range m {
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b *ObservedDestination) int {
		return CompareDestinationKeys(a.DestinationKey, b.DestinationKey)
	})
	return out
}

func sortedAddrs(in []netip.Addr) []netip.Addr {
	out := slices.Clone(in)
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

// CompareServiceKeys is the order Desired.Servers are kept in: address, port, then protocol.
func CompareServiceKeys(a, b ipvs.ServiceKey) int {
	if c := a.Address.Compare(b.Address); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Port, b.Port); c != 0 {
		return c
	}
	return cmp.Compare(a.Protocol, b.Protocol)
}

// CompareDestinationKeys is the order a VirtualServer's Destinations are kept in: address, then port.
func CompareDestinationKeys(a, b ipvs.DestinationKey) int {
	if c := a.Address.Compare(b.Address); c != 0 {
		return c
	}
	return cmp.Compare(a.Port, b.Port)
}
