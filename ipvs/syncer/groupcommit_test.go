package syncer

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
	"github.com/ipvs-operator/ipvs-operator/ipvs/fake"
	"github.com/ipvs-operator/ipvs-operator/ipvs/plan"
)

// slowRules is a fake nftables table whose Update costs a fixed time, as a transaction does in the
// kernel, and fails any update that adds the endpoint bad.
type slowRules struct {
	*fake.Rules
	cost time.Duration
	bad  netip.Addr

	mu      sync.Mutex
	updates int
}

var errBadElement = errors.New("injected: bad element")

func (r *slowRules) Update(add, remove ipvs.RuleElements) error {
	r.mu.Lock()
	r.updates++
	r.mu.Unlock()
	time.Sleep(r.cost)
	if r.bad.IsValid() && slices.Contains(add.Endpoints, r.bad) {
		return errBadElement
	}
	return r.Rules.Update(add, remove)
}

func (r *slowRules) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.updates
}

// groupService is Service i of a synthetic cluster: one TCP port, five endpoints, the first of which it
// shares with Service i+1 (endpoint IPs shared between Services are counted, not owned).
func groupService(i int) plan.Desired {
	vip := fmt.Sprintf("10.96.%d.%d:80", i/250, i%250+1)
	dests := make([]string, 0, 5)
	for j := range 5 {
		n := i*4 + j
		dests = append(dests, fmt.Sprintf("10.%d.%d.%d:8080", 128+n/65536, n/256%256, n%256))
	}
	return service(0, tcp(vip, dests...))
}

func newGroupSyncer(t testing.TB, rules ipvs.Rules) *Syncer {
	s := New(fake.New(), fake.NewVIPs(), rules, clocktesting.NewFakePassiveClock(t0), Options{})
	if err := s.Adopt(t.Context()); err != nil {
		t.Fatal(err)
	}
	return s
}

// syncParallel syncs Services 0..n-1 from workers goroutines and returns each Service's error.
func syncParallel(t testing.TB, s *Syncer, n, workers int) []error {
	errs := make([]error, n)
	next := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range next {
				_, errs[i] = s.SyncService(t.Context(), fmt.Sprintf("ns/svc-%d", i), groupService(i))
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return errs
}

// wantElements is what the sets must hold once Services 0..n-1 except skip are programmed.
func wantElements(n int, skip int) ipvs.RuleElements {
	var want ipvs.RuleElements
	for i := range n {
		if i == skip {
			continue
		}
		d := groupService(i)
		want.ClusterIPs = append(want.ClusterIPs, d.VIPs...)
		for _, sv := range d.Servers {
			want.Ports = append(want.Ports, sv.ServiceKey)
			for _, dst := range sv.Destinations {
				if !slices.Contains(want.Endpoints, dst.Address) {
					want.Endpoints = append(want.Endpoints, dst.Address)
				}
			}
		}
	}
	slices.SortFunc(want.ClusterIPs, netip.Addr.Compare)
	slices.SortFunc(want.Endpoints, netip.Addr.Compare)
	slices.SortFunc(want.Ports, plan.CompareServiceKeys)
	return want
}

func sortedElements(t testing.TB, r ipvs.Rules) ipvs.RuleElements {
	els, err := r.Elements()
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(els.ClusterIPs, netip.Addr.Compare)
	slices.SortFunc(els.Endpoints, netip.Addr.Compare)
	slices.SortFunc(els.Ports, plan.CompareServiceKeys)
	return els
}

// TestGroupCommit: Services synced at once share nftables transactions, and the sets end up holding exactly
// what they need (shared endpoints included); then removing every other Service in parallel leaves exactly
// what the rest need.
func TestGroupCommit(t *testing.T) {
	const n, workers = 60, 6
	rules := &slowRules{Rules: fake.NewRules(), cost: 2 * time.Millisecond}
	s := newGroupSyncer(t, rules)
	before := rules.count()
	for i, err := range syncParallel(t, s, n, workers) {
		if err != nil {
			t.Fatalf("Service %d: %v", i, err)
		}
	}
	// One transaction per Service without the group commit (a cold Service's elements go in with its ports).
	if got := rules.count() - before; got > n*2/3 {
		t.Errorf("%d nftables updates for %d Services synced by %d workers, want at most %d", got, n, workers, n*2/3)
	} else {
		t.Logf("%d nftables updates for %d Services synced by %d workers", got, n, workers)
	}
	if got, want := sortedElements(t, rules), wantElements(n, -1); !equalElements(got, want) {
		t.Errorf("sets after the cold start:\n got %v\nwant %v", got, want)
	}

	var wg sync.WaitGroup
	for i := 0; i < n; i += 2 {
		wg.Go(func() {
			if _, err := s.SyncService(t.Context(), fmt.Sprintf("ns/svc-%d", i), plan.Desired{}); err != nil {
				t.Errorf("removing Service %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	var want ipvs.RuleElements
	for i := 1; i < n; i += 2 {
		d := groupService(i)
		want.ClusterIPs = append(want.ClusterIPs, d.VIPs...)
		want.Ports = append(want.Ports, d.Servers[0].ServiceKey)
		for _, dst := range d.Servers[0].Destinations {
			want.Endpoints = append(want.Endpoints, dst.Address)
		}
	}
	slices.SortFunc(want.ClusterIPs, netip.Addr.Compare)
	slices.SortFunc(want.Endpoints, netip.Addr.Compare)
	want.Endpoints = slices.Compact(want.Endpoints)
	slices.SortFunc(want.Ports, plan.CompareServiceKeys)
	if got := sortedElements(t, rules); !equalElements(got, want) {
		t.Errorf("sets after removing every other Service:\n got %v\nwant %v", got, want)
	}
}

// TestGroupCommitIsolatesFailures: a Service whose elements the kernel refuses fails alone; the Services
// whose changes were batched with it are programmed.
func TestGroupCommitIsolatesFailures(t *testing.T) {
	const n, workers, bad = 30, 6, 7
	rules := &slowRules{Rules: fake.NewRules(), cost: 2 * time.Millisecond}
	rules.bad = groupService(bad).Servers[0].Destinations[2].Address // not shared with a neighbour
	s := newGroupSyncer(t, rules)
	for i, err := range syncParallel(t, s, n, workers) {
		switch {
		case i == bad && !errors.Is(err, errBadElement):
			t.Errorf("Service %d (refused element): err = %v, want %v", i, err, errBadElement)
		case i != bad && err != nil:
			t.Errorf("Service %d: %v", i, err)
		}
	}
	got := sortedElements(t, rules)
	want := wantElements(n, bad)
	// The refused Service's shared endpoints stay for their other Service; its own never went in.
	if !equalElements(got, want) {
		t.Errorf("sets:\n got %v\nwant %v", got, want)
	}
}

// BenchmarkColdSyncParallel: 1,000 Services synced into an empty kernel by six goroutines (the agent's five
// workers and its start-up pass), with nftables transactions that cost 200 us each, then the first audit.
// One op is the whole cold start; nft-updates/op says how many transactions it took. "batched" is the
// agent's Options.BatchColdStart.
func BenchmarkColdSyncParallel(b *testing.B) {
	const n, workers = 1000, 6
	for _, batch := range []bool{false, true} {
		b.Run(map[bool]string{false: "per-service", true: "batched"}[batch], func(b *testing.B) {
			updates := 0
			for b.Loop() {
				b.StopTimer()
				rules := &slowRules{Rules: fake.NewRules(), cost: 200 * time.Microsecond}
				s := New(fake.New(), fake.NewVIPs(), rules, clocktesting.NewFakePassiveClock(t0), Options{BatchColdStart: batch})
				if err := s.Adopt(b.Context()); err != nil {
					b.Fatal(err)
				}
				before := rules.count()
				b.StartTimer()
				for _, err := range syncParallel(b, s, n, workers) {
					if err != nil {
						b.Fatal(err)
					}
				}
				if err := s.Audit(b.Context()); err != nil {
					b.Fatal(err)
				}
				updates += rules.count() - before
			}
			b.ReportMetric(float64(updates)/float64(b.N), "nft-updates/op")
		})
	}
}
