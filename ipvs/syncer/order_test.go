package syncer_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
	"github.com/ipvs-operator/ipvs-operator/ipvs/fake"
	"github.com/ipvs-operator/ipvs-operator/ipvs/plan"
	"github.com/ipvs-operator/ipvs-operator/ipvs/syncer"
)

// rulesWatchingIPVS records, at each Update, whether the kernel's IPVS table already routes to the endpoints
// being added or still routes to those being removed.
type rulesWatchingIPVS struct {
	*fake.Rules
	k                       *fake.IPVS
	addedLate, removedEarly []netip.Addr
}

func (r *rulesWatchingIPVS) routed(a netip.Addr) bool {
	vs, _ := ipvs.Snapshot(r.k)
	for _, v := range vs {
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
	return r.Rules.Update(add, remove)
}

// NAT is decided on a connection's first packet: an endpoint must be in the hairpin set before IPVS can send
// it a connection, and leave it only once IPVS no longer does.
func TestHairpinElementsBracketTheRealServers(t *testing.T) {
	ctx := context.Background()
	k := fake.New()
	rules := &rulesWatchingIPVS{Rules: fake.NewRules(), k: k}
	s := syncer.New(k, fake.NewVIPs(), rules, clocktesting.NewFakePassiveClock(time.Unix(0, 0)), syncer.Options{})
	must(t, s.Adopt(ctx))

	vip := netip.MustParseAddr("10.96.0.10")
	state := func(eps ...string) plan.Desired {
		vs := ipvs.VirtualServer{Service: ipvs.Service{ServiceKey: ipvs.ServiceKey{Address: vip, Port: 53, Protocol: ipvs.UDP}, Scheduler: "rr"}}
		for _, e := range eps {
			vs.Destinations = append(vs.Destinations, ipvs.Destination{DestinationKey: ipvs.DestinationKey{Address: netip.MustParseAddr(e), Port: 5353}, Weight: 1})
		}
		return plan.Desired{VIPs: []netip.Addr{vip}, Servers: []ipvs.VirtualServer{vs}}
	}
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
