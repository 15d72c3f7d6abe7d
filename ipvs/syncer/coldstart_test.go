package syncer

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/ipvs-operator/ipvs-operator/ipvs/fake"
	"github.com/ipvs-operator/ipvs-operator/ipvs/plan"
)

// TestBatchColdStart: with Options.BatchColdStart, Services synced after an Adopt that found an empty kernel
// get their virtual servers at once but no VIP and no nftables element; the first Audit commits every
// Service's elements in ceil(n/coldChunk) transactions, binds every VIP, and skips its read. The kernel then
// holds exactly what the per-Service path leaves. A kernel holding some of the agent's state (a restart)
// takes the per-Service path.
func TestBatchColdStart(t *testing.T) {
	const n, workers = 2*coldChunk + 30, 6
	tests := []struct {
		name string
		// preBound is bound on the dummy interface before Adopt: a restart, not a cold start.
		preBound bool
		// bad, if >= 0, is a Service whose element the kernel refuses.
		bad int
		// wantUpdates is how many nftables transactions the first Audit makes, and says that it binds
		// with one BindAll; -1: not checked.
		wantUpdates  int
		wantDeferred bool
		// bindAllFails makes the batched binds fail: the Services' syncs report it, and the audit's full
		// pass binds them one by one.
		bindAllFails bool
	}{
		{name: "cold start", bad: -1, wantUpdates: 3, wantDeferred: true},
		{name: "restart: per-Service path", preBound: true, bad: -1, wantUpdates: -1},
		{name: "a refused element fails its Service alone", bad: 7, wantUpdates: -1, wantDeferred: true},
		{name: "batched binds refused", bad: -1, wantUpdates: -1, wantDeferred: true, bindAllFails: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rules := &slowRules{Rules: fake.NewRules()}
			if tc.bad >= 0 {
				rules.bad = groupService(tc.bad).Servers[0].Destinations[2].Address // not shared with a neighbour
			}
			kernel, vips := fake.New(), fake.NewVIPs()
			if tc.preBound {
				if err := vips.EnsureInterface(); err != nil {
					t.Fatal(err)
				}
				if err := vips.Bind(addr("10.255.0.1")); err != nil {
					t.Fatal(err)
				}
			}
			metrics := &recordingMetrics{ops: map[string]int{}}
			s := New(kernel, vips, rules, clocktesting.NewFakePassiveClock(t0), Options{BatchColdStart: true, Metrics: metrics})
			if err := s.Adopt(t.Context()); err != nil {
				t.Fatal(err)
			}
			before := rules.count()
			for i, err := range syncParallel(t, s, n, workers) {
				if err != nil && (!tc.wantDeferred || tc.bad < 0) {
					t.Fatalf("Service %d: %v", i, err)
				}
			}
			if svcs, _ := kernel.Services(); len(svcs) != n {
				t.Fatalf("%d virtual servers after the syncs, want %d", len(svcs), n)
			}
			bound, _ := vips.List()
			if tc.wantDeferred {
				if len(bound) != 0 || rules.count() != before {
					t.Fatalf("before the first audit: %d VIPs bound, %d nftables updates; want none of either", len(bound), rules.count()-before)
				}
			} else if len(bound) != n+1 {
				t.Fatalf("restart: %d VIPs bound after the syncs, want %d (every Service's and the stranger)", len(bound), n+1)
			}

			before = rules.count()
			services := kernel.OpCount(fake.Services)
			vips.ResetOps()
			errBindAll := errors.New("injected: batched binds refused")
			if tc.bindAllFails {
				vips.SetError(fake.BindAll, errBindAll)
			}
			err := s.Audit(t.Context())
			switch {
			case tc.bad >= 0 && !errors.Is(err, errBadElement):
				t.Errorf("Audit: err = %v, want %v", err, errBadElement)
			case tc.bindAllFails && !errors.Is(err, errBindAll):
				t.Errorf("Audit: err = %v, want %v", err, errBindAll)
			case tc.bad < 0 && !tc.bindAllFails && err != nil:
				t.Fatalf("Audit: %v", err)
			}
			if tc.wantUpdates >= 0 {
				if ops := vips.Ops(); ops[fake.BindAll] != 1 || ops[fake.Bind] != 0 {
					t.Errorf("the first audit bound with %d BindAll and %d Bind calls, want 1 and 0", ops[fake.BindAll], ops[fake.Bind])
				}
				if got := rules.count() - before; got != tc.wantUpdates {
					t.Errorf("the first audit made %d nftables updates, want %d", got, tc.wantUpdates)
				}
				if kernel.OpCount(fake.Services) != services {
					t.Errorf("the first audit after a clean cold start read the IPVS table")
				}
			}
			if got, want := sortedElements(t, rules), wantElements(n, tc.bad); !equalElements(got, want) {
				t.Errorf("sets after the first audit:\n got %v\nwant %v", got, want)
			}
			bound, _ = vips.List()
			for i := range n {
				vip := groupService(i).VIPs[0]
				if got := containsAddr(bound, vip); got != (i != tc.bad) {
					t.Errorf("Service %d: VIP %s bound = %v, want %v", i, vip, got, i != tc.bad)
				}
			}

			// After the first audit, a new Service is programmed completely by its own sync.
			if _, err := s.SyncService(t.Context(), fmt.Sprintf("ns/svc-%d", n), groupService(n)); err != nil {
				t.Fatal(err)
			}
			bound, _ = vips.List()
			if !containsAddr(bound, groupService(n).VIPs[0]) {
				t.Errorf("a Service synced after the first audit was not bound")
			}
		})
	}
}

func containsAddr(addrs []netip.Addr, a netip.Addr) bool {
	for _, b := range addrs {
		if b == a {
			return true
		}
	}
	return false
}

// TestBatchColdStartRemovedMeanwhile: a Service removed between its deferred sync and the first audit leaves
// nothing behind, and the audit binds the others.
func TestBatchColdStartRemovedMeanwhile(t *testing.T) {
	rules := fake.NewRules()
	kernel, vips := fake.New(), fake.NewVIPs()
	s := New(kernel, vips, rules, clocktesting.NewFakePassiveClock(t0), Options{BatchColdStart: true})
	if err := s.Adopt(t.Context()); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := s.SyncService(t.Context(), fmt.Sprintf("ns/svc-%d", i), groupService(i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.SyncService(t.Context(), "ns/svc-1", plan.Desired{DrainTimeout: time.Second}); err != nil {
		t.Fatal(err)
	}
	if err := s.Audit(t.Context()); err != nil {
		t.Fatal(err)
	}
	bound, _ := vips.List()
	if len(bound) != 2 || containsAddr(bound, groupService(1).VIPs[0]) {
		t.Errorf("bound %v, want the VIPs of Services 0 and 2", bound)
	}
	if svcs, _ := kernel.Services(); len(svcs) != 2 {
		t.Errorf("%d virtual servers, want 2", len(svcs))
	}
	want := wantElements(3, 1)
	if got := sortedElements(t, rules); !equalElements(got, want) {
		t.Errorf("sets:\n got %v\nwant %v", got, want)
	}
}
