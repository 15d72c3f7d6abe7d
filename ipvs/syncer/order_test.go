package syncer_test

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
	"github.com/ipvs-operator/ipvs-operator/ipvs/fake"
	"github.com/ipvs-operator/ipvs-operator/ipvs/plan"
	"github.com/ipvs-operator/ipvs-operator/ipvs/syncer"
)

// rulesWatchingIPVS records, at each Update, whether the kernel already routes clients to the endpoints
// being added or still routes to those being removed: a real server of a virtual server whose VIP is bound
// (IPVS sees a client's packet only once its destination is a local address).
type rulesWatchingIPVS struct {
	*fake.Rules
	k                       *fake.IPVS
	vips                    *fake.VIPs
	addedLate, removedEarly []netip.Addr
	updates                 int
}

func (r *rulesWatchingIPVS) routed(a netip.Addr) bool {
	vs, _ := ipvs.Snapshot(r.k)
	bound, _ := r.vips.List()
	for _, v := range vs {
		if !slices.Contains(bound, v.Address) {
			continue
		}
		for _, d := range v.Destinations {
			if d.Address == a {
				return true
			}
		}
	}
	return false
}

func (r *rulesWatchingIPVS) Update(add, remove ipvs.RuleElements) error {
	for _, a := range add.Endpoints {
		if r.routed(a) {
			r.addedLate = append(r.addedLate, a)
		}
	}
	for _, a := range remove.Endpoints {
		if r.routed(a) {
			r.removedEarly = append(r.removedEarly, a)
		}
	}
	r.updates++
	return r.Rules.Update(add, remove)
}

// watchedSyncer is a syncer on the fakes, adopted, whose rules record the order of their updates against IPVS.
func watchedSyncer(t *testing.T) (*syncer.Syncer, *rulesWatchingIPVS) {
	t.Helper()
	k := fake.New()
	vips := fake.NewVIPs()
	rules := &rulesWatchingIPVS{Rules: fake.NewRules(), k: k, vips: vips}
	s := syncer.New(k, vips, rules, clocktesting.NewFakePassiveClock(time.Unix(0, 0)), syncer.Options{})
	must(t, s.Adopt(context.Background()))
	return s, rules
}

// oneService is the desired state of one rr virtual server 10.96.0.10:port/proto with the endpoints eps on
// dstPort.
func oneService(proto ipvs.Protocol, port, dstPort uint16) func(eps ...string) plan.Desired {
	vip := netip.MustParseAddr("10.96.0.10")
	return func(eps ...string) plan.Desired {
		vs := ipvs.VirtualServer{Service: ipvs.Service{ServiceKey: ipvs.ServiceKey{Address: vip, Port: port, Protocol: proto}, Scheduler: "rr"}}
		for _, e := range eps {
			vs.Destinations = append(vs.Destinations, ipvs.Destination{DestinationKey: ipvs.DestinationKey{Address: netip.MustParseAddr(e), Port: dstPort}, Weight: 1})
		}
		return plan.Desired{VIPs: []netip.Addr{vip}, Servers: []ipvs.VirtualServer{vs}}
	}
}

// NAT is decided on a connection's first packet: an endpoint must be in the hairpin set before IPVS can send
// it a connection, and leave it only once IPVS no longer does.
func TestHairpinElementsBracketTheRealServers(t *testing.T) {
	ctx := context.Background()
	s, rules := watchedSyncer(t)
	state := oneService(ipvs.UDP, 53, 5353)
	for _, step := range [][]string{{"10.244.1.2"}, {"10.244.1.2", "10.244.1.3"}, {"10.244.1.3"}, nil} {
		if _, err := s.SyncService(ctx, "ns/dns", state(step...)); err != nil {
			t.Fatal(err)
		}
	}
	if len(rules.addedLate) > 0 || len(rules.removedEarly) > 0 {
		t.Fatalf("hairpin elements added after IPVS routed to them: %v; removed while IPVS still did: %v",
			rules.addedLate, rules.removedEarly)
	}
	if els, _ := rules.Elements(); len(els.Endpoints) != 0 {
		t.Fatalf("elements left after the Service went: %v", els)
	}
}

// A Service none of whose VIPs is bound yet (each one of a cold start) is reached by no client until its VIP
// is: its elements are written in one nftables transaction, with its ports, instead of one before the real
// servers and one after. A Service already bound still gets its new endpoints first.
func TestUnreachedServiceOneNftablesUpdate(t *testing.T) {
	ctx := context.Background()
	s, rules := watchedSyncer(t)
	state := oneService(ipvs.TCP, 80, 8080)
	for _, step := range []struct {
		eps     []string
		updates int
	}{
		{[]string{"10.244.1.2", "10.244.1.3"}, 1},               // new: elements and ports together, then the VIP
		{[]string{"10.244.1.2", "10.244.1.3", "10.244.1.4"}, 1}, // bound: the new endpoint before IPVS routes to it
	} {
		rules.updates = 0
		if _, err := s.SyncService(ctx, "ns/web", state(step.eps...)); err != nil {
			t.Fatal(err)
		}
		if rules.updates != step.updates {
			t.Errorf("%v: %d nftables updates, want %d", step.eps, rules.updates, step.updates)
		}
	}
	if len(rules.addedLate) > 0 {
		t.Errorf("hairpin elements added after IPVS routed clients to them: %v", rules.addedLate)
	}
	els, _ := rules.Elements()
	if len(els.ClusterIPs) != 1 || len(els.Endpoints) != 3 || len(els.Ports) != 1 {
		t.Errorf("elements %+v, want the ClusterIP, 3 endpoints and 1 port", els)
	}
	if bound, _ := rules.vips.List(); len(bound) != 1 {
		t.Errorf("bound VIPs %v, want 10.96.0.10", bound)
	}
}
