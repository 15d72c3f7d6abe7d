package plan

import (
	"net/netip"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
	"github.com/ipvs-operator/ipvs-operator/ipvs/fake"
)

// FuzzCompute starts from one of TestCompute's cases (base) and edits its desired and observed state with
// the fuzzer's bytes (edits): VIPs, virtual servers and real servers come and go, weights, connection counts,
// drain starts, the drain timeout and the clock change. For every valid Desired it checks that:
//
//   - every op succeeds, in order, on the fake kernel loaded with the observed state (the plan's order is
//     one the kernel accepts);
//   - no op deletes a desired virtual server or real server, unbinds a desired VIP, or sets a desired real
//     server to any weight but its desired one (so never to 0 while it is desired with weight > 0);
//   - the kernel then holds exactly the desired state, plus the real servers the plan leaves draining:
//     weight 0, TCP, connections left, deadline not reached; RecheckAt is the earliest of those deadlines;
//   - planning again against that kernel gives no op (applying a plan twice is a no-op);
//   - at RecheckAt the plan only deletes drained real servers, and applying it converges too;
//   - Compute leaves its inputs alone, and plans the same from the kernel read back in another order.
func FuzzCompute(f *testing.F) {
	for i := range computeCases {
		f.Add(uint8(i), []byte(nil))
	}
	// A few edit scripts that reach states the table does not: a second Service port with draining and
	// desired real servers, a dual-stack move, a clock past a drain deadline.
	f.Add(uint8(len(computeCases)), []byte{2, 0, 0, 0, 4, 0, 0, 0, 1, 6, 0, 1, 0, 0, 3, 120, 8, 2})
	f.Add(uint8(4), []byte{6, 0, 2, 0, 0, 2, 50, 6, 0, 3, 1, 1, 0, 0, 9, 200})
	f.Add(uint8(0), []byte{0, 1, 2, 1, 0, 1, 4, 0, 5, 0, 1, 5, 1, 0, 0, 1, 6, 0, 4, 0, 0, 3, 90, 8, 1, 9, 40})

	f.Fuzz(func(t *testing.T, base uint8, edits []byte) {
		want, have, now := fuzzComputeInput(base, edits)
		if want.Validate() != nil {
			return // callers validate first (the sync engine refuses such a Desired)
		}
		wantCopy, haveCopy := cloneDesired(want), cloneObserved(have)

		k := newKernelModel(t, have, now)
		first := Compute(want, k.observed(t), now)
		// The model read back (another order, unknown drain starts recorded as now) plans the same.
		if direct := Compute(want, have, now); !reflect.DeepEqual(first, direct) {
			t.Fatalf("Compute depends on the observed order or on a recorded drain start of now:\n%s\nvs\n%s", render(first.Ops), render(direct.Ops))
		}
		if !reflect.DeepEqual(want, wantCopy) || !reflect.DeepEqual(have, haveCopy) {
			t.Fatal("Compute modified its input")
		}
		checkSafe(t, want, first.Ops)
		k.apply(t, first.Ops, now)
		checkConverged(t, want, k.observed(t), now, first.RecheckAt)

		if second := Compute(want, k.observed(t), now); len(second.Ops) != 0 || !second.RecheckAt.Equal(first.RecheckAt) {
			t.Fatalf("second plan at the same time is not a no-op (RecheckAt %v, first %v):\n%s\nfirst plan:\n%s",
				second.RecheckAt, first.RecheckAt, render(second.Ops), render(first.Ops))
		}
		if first.RecheckAt.IsZero() {
			return
		}
		later := first.RecheckAt
		drained := Compute(want, k.observed(t), later)
		if len(drained.Ops) == 0 {
			t.Fatalf("nothing deleted at RecheckAt %v", later)
		}
		for _, op := range drained.Ops {
			if op.Kind != DeleteDestination {
				t.Fatalf("at RecheckAt the plan does more than delete drained real servers: %s", op)
			}
		}
		checkSafe(t, want, drained.Ops)
		k.apply(t, drained.Ops, later)
		checkConverged(t, want, k.observed(t), later, drained.RecheckAt)
		if after := Compute(want, k.observed(t), later); len(after.Ops) != 0 {
			t.Fatalf("plan after the drained deletions is not a no-op:\n%s", render(after.Ops))
		}
	})
}

// The fuzzer picks addresses, ports and names from these small sets, so that its edits of the desired and
// the observed state meet on the same virtual and real servers. They include every value computeCases use.
var (
	fuzzVIPs        = []netip.Addr{vip4, vip6, netip.MustParseAddr("10.96.0.11"), netip.MustParseAddr("fd00::11")}
	fuzzPorts       = []uint16{80, 443, 53, 9}
	fuzzProtocols   = []ipvs.Protocol{ipvs.TCP, ipvs.UDP, ipvs.SCTP}
	fuzzReal4       = []netip.Addr{netip.MustParseAddr("10.244.1.5"), netip.MustParseAddr("10.244.1.6"), netip.MustParseAddr("10.244.3.5"), netip.MustParseAddr("10.244.1.7")}
	fuzzReal6       = []netip.Addr{netip.MustParseAddr("fd00:244::5"), netip.MustParseAddr("fd00:244::6")}
	fuzzRealPorts   = []uint16{8080, 8443, 53}
	fuzzSchedulers  = []string{"rr", "lc", "sh"}
	fuzzPersistence = []time.Duration{0, time.Minute, 3 * time.Hour}
	fuzzDrains      = []time.Duration{0, 10 * time.Second, timeout, 5 * time.Minute, -time.Second}
)

// fuzzBytes hands out the fuzzer's bytes one choice at a time; past the end every choice is 0.
type fuzzBytes []byte

func (b *fuzzBytes) next() byte {
	if len(*b) == 0 {
		return 0
	}
	c := (*b)[0]
	*b = (*b)[1:]
	return c
}

func pick[T any](b *fuzzBytes, from []T) T { return from[int(b.next())%len(from)] }

// fuzzComputeInput is computeCases[base] (or nothing, for base past the table) changed by edits.
func fuzzComputeInput(base uint8, edits []byte) (Desired, Observed, time.Time) {
	var want Desired
	var have Observed
	now := t0
	if i := int(base) % (len(computeCases) + 1); i < len(computeCases) {
		want, have = cloneDesired(computeCases[i].want), cloneObserved(computeCases[i].have)
		if !computeCases[i].now.IsZero() {
			now = computeCases[i].now // a zero now would read as "drain start unknown" once recorded
		}
	}
	b := fuzzBytes(edits)
	for len(b) > 0 {
		switch b.next() % 10 {
		case 0:
			want.VIPs = toggle(want.VIPs, pick(&b, fuzzVIPs))
		case 1:
			have.VIPs = toggle(have.VIPs, pick(&b, fuzzVIPs))
		case 2: // a desired virtual server appears (with its VIP) or goes
			s := fuzzService(&b)
			if i := slices.IndexFunc(want.Servers, func(v ipvs.VirtualServer) bool { return v.ServiceKey == s.ServiceKey }); i >= 0 {
				want.Servers = slices.Delete(want.Servers, i, i+1)
				break
			}
			want.Servers = append(want.Servers, ipvs.VirtualServer{Service: s})
			if !slices.Contains(want.VIPs, s.Address) {
				want.VIPs = append(want.VIPs, s.Address)
			}
		case 3: // a desired virtual server's scheduler or persistence changes
			if len(want.Servers) > 0 {
				s := &want.Servers[int(b.next())%len(want.Servers)]
				s.Scheduler, s.Persistence = pick(&b, fuzzSchedulers), pick(&b, fuzzPersistence)
			}
		case 4: // a desired real server appears, changes weight, or goes
			if len(want.Servers) == 0 {
				break
			}
			s := &want.Servers[int(b.next())%len(want.Servers)]
			d := ipvs.Destination{DestinationKey: fuzzRealKey(&b, s.Address), Weight: int(b.next() % 4)}
			i := slices.IndexFunc(s.Destinations, func(x ipvs.Destination) bool { return x.DestinationKey == d.DestinationKey })
			switch {
			case i < 0:
				s.Destinations = append(s.Destinations, d)
			case d.Weight == 0:
				s.Destinations = slices.Delete(s.Destinations, i, i+1)
			default:
				s.Destinations[i] = d
			}
		case 5: // an observed virtual server appears or goes
			s := fuzzService(&b)
			if i := slices.IndexFunc(have.Servers, func(o ObservedServer) bool { return o.ServiceKey == s.ServiceKey }); i >= 0 {
				have.Servers = slices.Delete(have.Servers, i, i+1)
				break
			}
			have.Servers = append(have.Servers, ObservedServer{Service: s})
		case 6: // an observed real server appears or changes: weight, connections, drain start
			if len(have.Servers) == 0 {
				break
			}
			s := &have.Servers[int(b.next())%len(have.Servers)]
			d := ObservedDestination{ObservedDestination: ipvs.ObservedDestination{
				Destination:      ipvs.Destination{DestinationKey: fuzzRealKey(&b, s.Address), Weight: int(b.next() % 3)},
				DestinationStats: ipvs.DestinationStats{ActiveConnections: int(b.next() % 3), InactiveConnections: int(b.next() % 2)},
			}}
			if c := b.next(); c != 0 {
				d.DrainingSince = t0.Add(time.Duration(int(c)-100) * time.Second)
			}
			if i := slices.IndexFunc(s.Destinations, func(x ObservedDestination) bool { return x.DestinationKey == d.DestinationKey }); i >= 0 {
				s.Destinations[i] = d
			} else {
				s.Destinations = append(s.Destinations, d)
			}
		case 7: // an observed real server goes
			if len(have.Servers) > 0 {
				s := &have.Servers[int(b.next())%len(have.Servers)]
				if len(s.Destinations) > 0 {
					i := int(b.next()) % len(s.Destinations)
					s.Destinations = slices.Delete(s.Destinations, i, i+1)
				}
			}
		case 8:
			want.DrainTimeout = pick(&b, fuzzDrains)
		case 9:
			now = t0.Add(time.Duration(b.next()) * time.Second)
		}
	}
	// Desired's documented order, as the translation produces it.
	slices.SortFunc(want.VIPs, netip.Addr.Compare)
	slices.SortFunc(want.Servers, func(a, b ipvs.VirtualServer) int { return CompareServiceKeys(a.ServiceKey, b.ServiceKey) })
	for _, s := range want.Servers {
		slices.SortFunc(s.Destinations, func(a, b ipvs.Destination) int { return CompareDestinationKeys(a.DestinationKey, b.DestinationKey) })
	}
	// The sync engine's cache only records a drain start for a weight-0 real server.
	for _, s := range have.Servers {
		for i := range s.Destinations {
			if s.Destinations[i].Weight != 0 {
				s.Destinations[i].DrainingSince = time.Time{}
			}
		}
	}
	return want, have, now
}

func fuzzService(b *fuzzBytes) ipvs.Service {
	return ipvs.Service{
		ServiceKey: ipvs.ServiceKey{Address: pick(b, fuzzVIPs), Port: pick(b, fuzzPorts), Protocol: pick(b, fuzzProtocols)},
		Scheduler:  pick(b, fuzzSchedulers), Persistence: pick(b, fuzzPersistence),
	}
}

// fuzzRealKey is a real server of vip's family: the kernel refuses mixed families.
func fuzzRealKey(b *fuzzBytes, vip netip.Addr) ipvs.DestinationKey {
	addrs := fuzzReal6
	if vip.Is4() {
		addrs = fuzzReal4
	}
	return ipvs.DestinationKey{Address: pick(b, addrs), Port: pick(b, fuzzRealPorts)}
}

func toggle(in []netip.Addr, a netip.Addr) []netip.Addr {
	if i := slices.Index(in, a); i >= 0 {
		return slices.Delete(in, i, i+1)
	}
	return append(in, a)
}

func cloneDesired(d Desired) Desired {
	d.VIPs = slices.Clone(d.VIPs)
	d.Servers = slices.Clone(d.Servers)
	for i := range d.Servers {
		d.Servers[i].Destinations = slices.Clone(d.Servers[i].Destinations)
	}
	return d
}

func cloneObserved(o Observed) Observed {
	o.VIPs = slices.Clone(o.VIPs)
	o.Servers = slices.Clone(o.Servers)
	for i := range o.Servers {
		o.Servers[i].Destinations = slices.Clone(o.Servers[i].Destinations)
	}
	return o
}

// checkSafe fails if an op takes traffic from something desired: deleting a desired virtual server or real
// server, unbinding a desired VIP, or giving a desired real server another weight than its desired one.
func checkSafe(t *testing.T, want Desired, ops []Op) {
	t.Helper()
	weights := map[ipvs.ServiceKey]map[ipvs.DestinationKey]int{}
	for _, s := range want.Servers {
		weights[s.ServiceKey] = map[ipvs.DestinationKey]int{}
		for _, d := range s.Destinations {
			weights[s.ServiceKey][d.DestinationKey] = d.Weight
		}
	}
	for _, op := range ops {
		k, dk := op.Service.ServiceKey, op.Destination.DestinationKey
		w, desired := weights[k][dk]
		switch {
		case op.Kind == UnbindVIP && BindableVIPs(want).Has(op.VIP),
			op.Kind == DeleteService && weights[k] != nil,
			op.Kind == DeleteDestination && desired,
			op.Kind == UpdateDestination && desired && op.Destination.Weight != w:
			t.Fatalf("op %q takes traffic from a desired object\nops:\n%s", op, render(ops))
		}
	}
}

// checkConverged fails unless got is want plus the real servers left draining: not desired, weight 0, with
// connections, TCP with a positive timeout, and a deadline after now; recheck must be the earliest deadline.
func checkConverged(t *testing.T, want Desired, got Observed, now, recheck time.Time) {
	t.Helper()
	if wantVIPs := sortedAddrs(BindableVIPs(want).UnsortedList()); !slices.Equal(got.VIPs, wantVIPs) {
		t.Fatalf("VIPs %v, want %v", got.VIPs, wantVIPs)
	}
	if len(got.Servers) != len(want.Servers) {
		t.Fatalf("%d virtual servers, want %d: %+v", len(got.Servers), len(want.Servers), got.Servers)
	}
	var earliest time.Time
	for _, w := range want.Servers {
		i := slices.IndexFunc(got.Servers, func(o ObservedServer) bool { return o.ServiceKey == w.ServiceKey })
		if i < 0 {
			t.Fatalf("virtual server %s missing", w.ServiceKey)
		}
		g := got.Servers[i]
		if g.Service != w.Service {
			t.Fatalf("virtual server %+v, want %+v", g.Service, w.Service)
		}
		for _, d := range w.Destinations {
			j := slices.IndexFunc(g.Destinations, func(o ObservedDestination) bool { return o.DestinationKey == d.DestinationKey })
			if j < 0 || g.Destinations[j].Weight != d.Weight {
				t.Fatalf("%s: real server %s missing or not at weight %d: %+v", w.ServiceKey, d.DestinationKey, d.Weight, g.Destinations)
			}
		}
		timeout := want.DrainTimeoutFor(w.Protocol)
		for _, o := range g.Destinations {
			if slices.ContainsFunc(w.Destinations, func(d ipvs.Destination) bool { return d.DestinationKey == o.DestinationKey }) {
				continue
			}
			since := o.DrainingSince
			if since.IsZero() {
				since = now
			}
			deadline := since.Add(timeout)
			if o.Weight != 0 || timeout <= 0 || o.ActiveConnections+o.InactiveConnections == 0 || !now.Before(deadline) {
				t.Fatalf("%s: real server %+v left behind, not draining (timeout %v, now %v)", w.ServiceKey, o, timeout, now)
			}
			if earliest.IsZero() || deadline.Before(earliest) {
				earliest = deadline
			}
		}
	}
	if !earliest.Equal(recheck) {
		t.Fatalf("RecheckAt %v, earliest drain deadline %v", recheck, earliest)
	}
}

// kernelModel is the fake kernel plus the drain starts the sync engine's cache records: set when a real
// server goes to weight 0, cleared when its weight comes back, kept otherwise (ipvs/syncer's applier.setDest).
type kernelModel struct {
	ipvs  *fake.IPVS
	vips  *fake.VIPs
	since map[realServer]time.Time
}

type realServer struct {
	svc ipvs.ServiceKey
	dst ipvs.DestinationKey
}

// newKernelModel loads have; like the cache after a read, a weight-0 real server without a drain start
// drains from now (ipvs/syncer's server.setObserved).
func newKernelModel(t *testing.T, have Observed, now time.Time) *kernelModel {
	t.Helper()
	k := &kernelModel{ipvs: fake.New(), vips: fake.NewVIPs(), since: map[realServer]time.Time{}}
	must(t, k.vips.EnsureInterface())
	for _, v := range have.VIPs {
		must(t, k.vips.Bind(v))
	}
	for _, s := range have.Servers {
		must(t, k.ipvs.AddService(s.Service))
		for _, d := range s.Destinations {
			must(t, k.ipvs.AddDestination(s.ServiceKey, d.Destination))
			must(t, k.ipvs.SetConnections(s.ServiceKey, d.DestinationKey, d.ActiveConnections, d.InactiveConnections))
			switch {
			case d.Weight != 0:
			case d.DrainingSince.IsZero():
				k.since[realServer{s.ServiceKey, d.DestinationKey}] = now
			default:
				k.since[realServer{s.ServiceKey, d.DestinationKey}] = d.DrainingSince
			}
		}
	}
	return k
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// apply runs ops on the fake kernel; any error means the plan's order or content is wrong.
func (k *kernelModel) apply(t *testing.T, ops []Op, now time.Time) {
	t.Helper()
	for _, op := range ops {
		var err error
		svc, rs := op.Service.ServiceKey, realServer{op.Service.ServiceKey, op.Destination.DestinationKey}
		switch op.Kind {
		case BindVIP:
			err = k.vips.Bind(op.VIP)
		case UnbindVIP:
			err = k.vips.Unbind(op.VIP)
		case AddService:
			err = k.ipvs.AddService(op.Service)
		case UpdateService:
			err = k.ipvs.UpdateService(op.Service)
		case DeleteService:
			err = k.ipvs.DeleteService(svc)
			for r := range k.since {
				if r.svc == svc {
					delete(k.since, r)
				}
			}
		case AddDestination, UpdateDestination:
			if op.Kind == AddDestination {
				err = k.ipvs.AddDestination(svc, op.Destination)
			} else {
				err = k.ipvs.UpdateDestination(svc, op.Destination)
			}
			switch _, draining := k.since[rs]; {
			case op.Destination.Weight > 0:
				delete(k.since, rs)
			case !draining:
				k.since[rs] = now
			}
		case DeleteDestination:
			err = k.ipvs.DeleteDestination(svc, rs.dst)
			delete(k.since, rs)
		default:
			t.Fatalf("unknown op %v", op.Kind)
		}
		if err != nil {
			t.Fatalf("op %q failed on the fake kernel: %v\nops:\n%s", op, err, render(ops))
		}
	}
}

// observed reads the fake kernel back as the sync engine's cache would describe it.
func (k *kernelModel) observed(t *testing.T) Observed {
	t.Helper()
	vips, err := k.vips.List()
	must(t, err)
	svcs, err := k.ipvs.Services()
	must(t, err)
	o := Observed{VIPs: vips}
	for _, s := range svcs {
		dsts, err := k.ipvs.Destinations(s.ServiceKey)
		must(t, err)
		os := ObservedServer{Service: s}
		for _, d := range dsts {
			os.Destinations = append(os.Destinations, ObservedDestination{ObservedDestination: d, DrainingSince: k.since[realServer{s.ServiceKey, d.DestinationKey}]})
		}
		o.Servers = append(o.Servers, os)
	}
	return o
}
