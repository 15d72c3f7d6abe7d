package syncer

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
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
	s, kernel, vips, rules := batchColdStarted(t, 3)
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

// TestColdStartBatchedAdditions: a cold start's Service creates its virtual servers and real servers in one
// ipvs.Batcher call, and each outcome is handled as the call's own: a virtual server someone made meanwhile
// is taken over (its stranger real server removed), a missing scheduler fails that Service alone and
// leaves no real server behind, and the kernel ends as the desired state says.
func TestColdStartBatchedAdditions(t *testing.T) {
	want := service(0, tcp("10.96.0.1:80", "10.244.1.1:8080", "10.244.1.2:8080"), udp("10.96.0.1:53", "10.244.1.1:53"))
	tests := []struct {
		name string
		// meanwhile runs between Adopt and the sync.
		meanwhile func(t *testing.T, k *fake.IPVS)
		wantErr   error
		// wantDests is each virtual server's real servers after the first audit.
		wantDests map[ipvs.ServiceKey][]ipvs.DestinationKey
	}{
		{
			name: "new virtual servers",
			wantDests: map[ipvs.ServiceKey][]ipvs.DestinationKey{
				skey(ipvs.TCP, "10.96.0.1:80"): {dkey("10.244.1.1:8080"), dkey("10.244.1.2:8080")},
				skey(ipvs.UDP, "10.96.0.1:53"): {dkey("10.244.1.1:53")},
			},
		},
		{
			name: "a virtual server made meanwhile is taken over",
			meanwhile: func(t *testing.T, k *fake.IPVS) {
				k80 := skey(ipvs.TCP, "10.96.0.1:80")
				if err := k.AddService(ipvs.Service{ServiceKey: k80, Scheduler: "lc"}); err != nil {
					t.Fatal(err)
				}
				if err := k.AddDestination(k80, ipvs.Destination{DestinationKey: dkey("10.244.9.9:8080"), Weight: 3}); err != nil {
					t.Fatal(err)
				}
			},
			wantDests: map[ipvs.ServiceKey][]ipvs.DestinationKey{
				skey(ipvs.TCP, "10.96.0.1:80"): {dkey("10.244.1.1:8080"), dkey("10.244.1.2:8080")},
				skey(ipvs.UDP, "10.96.0.1:53"): {dkey("10.244.1.1:53")},
			},
		},
		{
			name:      "a missing scheduler fails the Service",
			meanwhile: func(_ *testing.T, k *fake.IPVS) { k.SetSchedulers("lc") },
			wantErr:   ipvs.ErrSchedulerNotFound,
			wantDests: map[ipvs.ServiceKey][]ipvs.DestinationKey{},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, kernel, _, _ := batchColdStarted(t, 0)
			if tc.meanwhile != nil {
				tc.meanwhile(t, kernel)
			}
			kernel.ResetOps()
			_, err := s.SyncService(t.Context(), "ns/a", want)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("SyncService: %v, want %v", err, tc.wantErr)
			}
			if got := kernel.OpCount(fake.Batch); got != 1 {
				t.Errorf("%d Batch calls, want 1", got)
			}
			_ = s.Audit(t.Context())
			got := map[ipvs.ServiceKey][]ipvs.DestinationKey{}
			svcs, _ := kernel.Services()
			for _, svc := range svcs {
				if svc.Scheduler != "rr" {
					t.Errorf("%s has scheduler %q, want rr", svc.ServiceKey, svc.Scheduler)
				}
				dsts, _ := kernel.Destinations(svc.ServiceKey)
				got[svc.ServiceKey] = []ipvs.DestinationKey{}
				for _, d := range dsts {
					got[svc.ServiceKey] = append(got[svc.ServiceKey], d.DestinationKey)
					if d.Weight != 1 {
						t.Errorf("%s -r %s at weight %d, want 1", svc.ServiceKey, d.DestinationKey, d.Weight)
					}
				}
			}
			if !reflect.DeepEqual(got, tc.wantDests) {
				t.Errorf("kernel after the first audit:\n got %v\nwant %v", got, tc.wantDests)
			}
		})
	}
}

// TestBatchColdStartCutShort: a first audit whose context ends during its syncs leaves no VIP bound that
// a sync did not bind (the batch bound them ahead), and the next audit binds them all.
func TestBatchColdStartCutShort(t *testing.T) {
	s, _, vips, rules := batchColdStarted(t, 3)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := s.Audit(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Audit with an ended context: %v, want %v", err, context.Canceled)
	}
	if bound, _ := vips.List(); len(bound) != 0 {
		t.Errorf("VIPs bound after a cut-short first audit: %v, want none", bound)
	}
	if err := s.Audit(t.Context()); err != nil {
		t.Fatal(err)
	}
	if bound, _ := vips.List(); len(bound) != 3 {
		t.Errorf("VIPs bound after the next audit: %v, want 3", bound)
	}
	if got, want := sortedElements(t, rules), wantElements(3, -1); !equalElements(got, want) {
		t.Errorf("sets:\n got %v\nwant %v", got, want)
	}
}

// batchColdStarted is an engine with BatchColdStart on fake kernel objects, adopted empty (a cold start), that
// has synced n of groupService's Services (their nftables elements and VIPs deferred to the first audit).
func batchColdStarted(t *testing.T, n int) (*Syncer, *fake.IPVS, *fake.VIPs, *fake.Rules) {
	t.Helper()
	kernel, vips, rules := fake.New(), fake.NewVIPs(), fake.NewRules()
	s := New(kernel, vips, rules, clocktesting.NewFakePassiveClock(t0), Options{BatchColdStart: true})
	if err := s.Adopt(t.Context()); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if _, err := s.SyncService(t.Context(), fmt.Sprintf("ns/svc-%d", i), groupService(i)); err != nil {
			t.Fatal(err)
		}
	}
	return s, kernel, vips, rules
}
