package syncer_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
	"github.com/ipvs-operator/ipvs-operator/ipvs/fake"
	"github.com/ipvs-operator/ipvs-operator/ipvs/syncer"
)

// A Service that cannot be translated after a restart keeps its inherited data path through Audit's sweep.
func TestRetainKeepsAdoptedStateThroughAudit(t *testing.T) {
	ctx := context.Background()
	k, v, r := fake.New(), fake.NewVIPs(), fake.NewRules()
	vip := netip.MustParseAddr("10.96.0.10")
	svc := ipvs.Service{ServiceKey: ipvs.ServiceKey{Address: vip, Port: 80, Protocol: ipvs.TCP}, Scheduler: "rr"}
	dst := ipvs.Destination{DestinationKey: ipvs.DestinationKey{Address: netip.MustParseAddr("10.244.1.2"), Port: 8080}, Weight: 1}
	must(t, v.EnsureInterface())
	must(t, v.Bind(vip))
	must(t, k.AddService(svc))
	must(t, k.AddDestination(svc.ServiceKey, dst))

	s := syncer.New(k, v, r, clocktesting.NewFakePassiveClock(time.Unix(0, 0)), syncer.Options{})
	must(t, s.Adopt(ctx))
	k.ResetOps()
	res, err := s.Retain(ctx, "ns/bad", []netip.Addr{vip})
	must(t, err)
	if res.Ops != 0 {
		t.Fatalf("Retain changed the kernel: %d ops", res.Ops)
	}
	must(t, s.Audit(ctx))
	got, err := ipvs.Snapshot(k)
	must(t, err)
	want := "-A -t 10.96.0.10:80 -s rr\n-a -t 10.96.0.10:80 -r 10.244.1.2:8080 -m -w 1\n"
	if r := ipvs.Render(got); r != want {
		t.Fatalf("after Retain and Audit the table is\n%s\nwant\n%s", r, want)
	}
	if bound, _ := v.List(); len(bound) != 1 {
		t.Fatalf("VIP unbound: %v", bound)
	}

	// Without Retain, the same Audit sweeps it: the test above is not vacuous.
	s2 := syncer.New(k, v, r, clocktesting.NewFakePassiveClock(time.Unix(0, 0)), syncer.Options{})
	must(t, s2.Adopt(ctx))
	must(t, s2.Audit(ctx))
	if got, _ := ipvs.Snapshot(k); len(got) != 0 {
		t.Fatalf("an unclaimed adopted virtual server survived the sweep: %s", ipvs.Render(got))
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
