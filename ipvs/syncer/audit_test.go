package syncer

import (
	"errors"
	"net/netip"
	"reflect"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
	"github.com/ipvs-operator/ipvs-operator/ipvs/fake"
	"github.com/ipvs-operator/ipvs-operator/ipvs/plan"
)

// gatedIPVS holds one kernel call (of a verb, on a key) until the test releases it, and tells the test
// when the call is being held: it makes "while the audit is in the middle of X" a fact, not a timing.
type gatedIPVS struct {
	ipvs.Interface
	mu      sync.Mutex
	verb    fake.Verb
	key     ipvs.ServiceKey // zero: any
	held    chan struct{}
	release chan struct{}
}

// arm makes the next call of verb on key (zero: any) block. It returns a channel closed once that call is
// blocked, and the function that lets it go on.
func (g *gatedIPVS) arm(verb fake.Verb, key ipvs.ServiceKey) (<-chan struct{}, func()) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.verb, g.key = verb, key
	g.held, g.release = make(chan struct{}), make(chan struct{})
	release := g.release
	var once sync.Once
	return g.held, func() { once.Do(func() { close(release) }) }
}

func (g *gatedIPVS) gate(verb fake.Verb, key ipvs.ServiceKey) {
	g.mu.Lock()
	if g.held == nil || g.verb != verb || (g.key != ipvs.ServiceKey{} && g.key != key) {
		g.mu.Unlock()
		return
	}
	held, release := g.held, g.release
	g.held = nil // once
	g.mu.Unlock()
	close(held)
	<-release
}

func (g *gatedIPVS) Services() ([]ipvs.Service, error) {
	g.gate(fake.Services, ipvs.ServiceKey{})
	return g.Interface.Services()
}

// Destinations blocks after the read, so the caller holds what the kernel had before the test goes on.
func (g *gatedIPVS) Destinations(k ipvs.ServiceKey) ([]ipvs.ObservedDestination, error) {
	d, err := g.Interface.Destinations(k)
	g.gate(fake.Destinations, k)
	return d, err
}

func (g *gatedIPVS) AddService(s ipvs.Service) error {
	g.gate(fake.AddService, s.ServiceKey)
	return g.Interface.AddService(s)
}

func (g *gatedIPVS) DeleteService(k ipvs.ServiceKey) error {
	g.gate(fake.DeleteService, k)
	return g.Interface.DeleteService(k)
}

// gate restarts the harness's Syncer over a gatedIPVS in front of the fake IPVS, as an agent restart does.
func (h *harness) gate() *gatedIPVS {
	h.t.Helper()
	g := &gatedIPVS{Interface: h.ipvs}
	h.s = New(g, h.vips, h.rules, h.clock, Options{Metrics: h.metrics, PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}})
	if err := h.s.Adopt(h.ctx); err != nil {
		h.t.Fatal(err)
	}
	return g
}

func gatedHarness(t *testing.T) (*harness, *gatedIPVS) {
	h := newHarness(t)
	return h, h.gate()
}

// auditInBackground starts an Audit and returns its result channel.
func (h *harness) auditInBackground() <-chan error {
	done := make(chan error, 1)
	go func() { done <- h.s.Audit(h.ctx) }()
	return done
}

// syncWhileHeld runs SyncService and fails the test if it does not return while the audit is held. The
// audit cannot move until release is called, so a SyncService that waited for it would never return: the
// deadline only turns that hang into a failure, it measures nothing.
func (h *harness) syncWhileHeld(key string, want plan.Desired) (Result, error) {
	h.t.Helper()
	type out struct {
		res Result
		err error
	}
	done := make(chan out, 1)
	go func() {
		res, err := h.s.SyncService(h.ctx, key, want)
		done <- out{res, err}
	}()
	select {
	case o := <-done:
		return o.res, o.err
	case <-time.After(30 * time.Second):
		h.t.Fatalf("SyncService(%s) waited for the audit", key)
		return Result{}, nil
	}
}

func TestAuditDoesNotBlockSyncService(t *testing.T) {
	h, g := gatedHarness(t)
	a, b := "ns/a", "ns/b"
	if h.s.keyLock(a) == h.s.keyLock(b) {
		t.Fatal("pick two keys with different key locks")
	}
	h.sync(a, service(drain, tcp("10.96.0.10:80", "10.244.1.5:8080")))
	h.sync(b, service(drain, tcp("10.96.0.20:80", "10.244.2.5:8080")))

	// While the audit reads the kernel.
	held, release := g.arm(fake.Services, ipvs.ServiceKey{})
	done := h.auditInBackground()
	<-held
	if _, err := h.syncWhileHeld(b, service(drain, tcp("10.96.0.20:80", "10.244.2.5:8080", "10.244.2.6:8080"))); err != nil {
		t.Fatal(err)
	}
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// While the audit repairs another Service (and holds that Service's key lock).
	h.ipvs.Flush()
	held, release = g.arm(fake.AddService, skey(ipvs.TCP, "10.96.0.10:80"))
	done = h.auditInBackground()
	<-held
	if _, err := h.syncWhileHeld(b, service(drain, tcp("10.96.0.20:80", "10.244.2.6:8080"))); err != nil {
		t.Fatal(err)
	}
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	vs, _ := ipvs.Snapshot(h.ipvs)
	if got, want := ipvs.Render(vs), "-A -t 10.96.0.10:80 -s rr\n-a -t 10.96.0.10:80 -r 10.244.1.5:8080 -m -w 1\n"+
		"-A -t 10.96.0.20:80 -s rr\n-a -t 10.96.0.20:80 -r 10.244.2.6:8080 -m -w 1\n"; got != want {
		t.Errorf("after the audit:\n%s\nwant\n%s", got, want)
	}
}

// TestAuditDoesNotUndoANewerSync: the audit's snapshot of a Service is taken, then the Service is synced,
// then the audit reaches it. It must re-read that Service rather than install the older snapshot: here the
// snapshot still shows a real server at weight 1 that the sync has since put to drain, and installing it
// would restart the drain from the audit's time.
func TestAuditDoesNotUndoANewerSync(t *testing.T) {
	h, g := gatedHarness(t)
	k := skey(ipvs.TCP, "10.96.0.10:80")
	h.sync("ns/a", service(drain, tcp("10.96.0.10:80", "10.244.1.5:8080", "10.244.1.6:8080")))
	if err := h.ipvs.SetConnections(k, dkey("10.244.1.6:8080"), 3, 0); err != nil {
		t.Fatal(err)
	}

	held, release := g.arm(fake.Destinations, k)
	done := h.auditInBackground()
	<-held // the snapshot holds 10.244.1.6 at weight 1
	res, err := h.syncWhileHeld("ns/a", service(drain, tcp("10.96.0.10:80", "10.244.1.5:8080")))
	if err != nil || res.Ops != 1 {
		t.Fatalf("sync during the audit: %+v, %v; want the one real server put to drain", res, err)
	}
	h.clock.SetTime(t0.Add(10 * time.Second))
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if rep := h.metrics.lastAudit(); rep.Reread != 1 || rep.Services != 0 {
		t.Errorf("audit report %+v; want ns/a re-read on its own and nothing to repair", rep)
	}
	// The drain started at t0 and ends at t0+drain, not at the audit's time + drain.
	h.clock.SetTime(t0.Add(drain))
	if res := h.sync("ns/a", service(drain, tcp("10.96.0.10:80", "10.244.1.5:8080"))); res.Ops != 1 {
		t.Errorf("at the drain's deadline: %+v, want the real server deleted", res)
	}
}

// TestSweepNeverRemovesWhatAServiceClaims: virtual servers and a VIP left by a previous agent, unclaimed
// when the audit reads the kernel, are claimed by a new Service before the sweep reaches them (the sweep
// must leave them), or while the sweep empties them (the Service must wait its turn: ErrConflict, retry).
func TestSweepNeverRemovesWhatAServiceClaims(t *testing.T) {
	orphan := skey(ipvs.TCP, "10.96.0.99:80")
	setup := func(t *testing.T) (*harness, *gatedIPVS) {
		h := newHarness(t)
		h.sync("ns/web", service(drain, tcp("10.96.0.10:80", "10.244.1.5:8080")))
		h.sync("ns/gone", service(drain, tcp("10.96.0.99:80", "10.244.9.9:8080")))
		// The agent restarts; ns/gone was deleted meanwhile and its ClusterIP given to ns/new.
		g := h.gate()
		h.sync("ns/web", service(drain, tcp("10.96.0.10:80", "10.244.1.5:8080")))
		return h, g
	}
	newSvc := service(drain, tcp("10.96.0.99:443", "10.244.5.5:8443"))
	const want = "# vips: 10.96.0.10 10.96.0.99\n# nft clusterIPs: 10.96.0.10 10.96.0.99\n# nft endpoints: 10.244.1.5 10.244.5.5\n" +
		"# nft ports: -t 10.96.0.10:80, -t 10.96.0.99:443\n" +
		"-A -t 10.96.0.10:80 -s rr\n-a -t 10.96.0.10:80 -r 10.244.1.5:8080 -m -w 1\n" +
		"-A -t 10.96.0.99:443 -s rr\n-a -t 10.96.0.99:443 -r 10.244.5.5:8443 -m -w 1\n"

	t.Run("claimed after the read", func(t *testing.T) {
		h, g := setup(t)
		held, release := g.arm(fake.Destinations, orphan)
		done := h.auditInBackground()
		<-held // the snapshot has the orphan on an unclaimed VIP
		if _, err := h.syncWhileHeld("ns/new", newSvc); err != nil {
			t.Fatal(err)
		}
		release()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if got := h.state(); got != want {
			t.Errorf("after the audit:\n%s\nwant\n%s", got, want)
		}
	})

	t.Run("claimed during the sweep", func(t *testing.T) {
		h, g := setup(t)
		held, release := g.arm(fake.DeleteService, orphan)
		done := h.auditInBackground()
		<-held // the sweep is emptying 10.96.0.99
		if _, err := h.syncWhileHeld("ns/new", newSvc); !errors.Is(err, ErrConflict) {
			t.Fatalf("sync during the sweep: err = %v, want ErrConflict (retry)", err)
		}
		release()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		h.sync("ns/new", newSvc) // the controller's retry
		if got := h.state(); got != want {
			t.Errorf("after the retry:\n%s\nwant\n%s", got, want)
		}
		if rep := h.metrics.lastAudit(); rep.Orphans != 1 || rep.VIPs != 1 {
			t.Errorf("audit report %+v; want one orphan deleted and its VIP unbound", rep)
		}
	})
}

// TestNftablesFailuresFailClosed: when the new hairpin/ClusterIP elements cannot be written, nothing starts
// routing to them (no VIP bound, no real server added or restored behind a bound VIP; a new Service's
// virtual servers may exist, unreachable behind its unbound VIP); what needs no new element (removals,
// drains) still happens; the error makes the caller retry, and the retry finishes.
func TestNftablesFailuresFailClosed(t *testing.T) {
	for _, tc := range []struct {
		name        string
		before, now plan.Desired
		// during is the kernel (ipvsadm -Sn) while nftables fails.
		during string
	}{
		{
			// Its elements are written with its ports, after the real servers (one transaction): those
			// exist, but no client reaches them while the VIP is unbound.
			name:   "new Service",
			now:    service(drain, tcp("10.96.0.10:80", "10.244.1.5:8080")),
			during: "-A -t 10.96.0.10:80 -s rr\n-a -t 10.96.0.10:80 -r 10.244.1.5:8080 -m -w 1\n",
		},
		{
			name:   "new endpoint: the old one keeps serving",
			before: service(drain, tcp("10.96.0.10:80", "10.244.1.5:8080")),
			now:    service(drain, tcp("10.96.0.10:80", "10.244.1.6:8080")),
			during: "-A -t 10.96.0.10:80 -s rr\n-a -t 10.96.0.10:80 -r 10.244.1.5:8080 -m -w 1\n",
		},
		{
			name:   "new endpoint next to a known one",
			before: service(drain, tcp("10.96.0.10:80", "10.244.1.5:8080")),
			now:    service(drain, tcp("10.96.0.10:80", "10.244.1.5:8080", "10.244.1.6:8080"), tcp("10.96.0.10:443", "10.244.1.5:8443")),
			during: "-A -t 10.96.0.10:80 -s rr\n-a -t 10.96.0.10:80 -r 10.244.1.5:8080 -m -w 1\n" +
				"-A -t 10.96.0.10:443 -s rr\n-a -t 10.96.0.10:443 -r 10.244.1.5:8443 -m -w 1\n",
		},
		{
			name:   "removal only: needs no new element, goes ahead",
			before: service(drain, tcp("10.96.0.10:80", "10.244.1.5:8080", "10.244.1.6:8080")),
			now:    service(drain, tcp("10.96.0.10:80", "10.244.1.5:8080")),
			during: "-A -t 10.96.0.10:80 -s rr\n-a -t 10.96.0.10:80 -r 10.244.1.5:8080 -m -w 1\n",
		},
		{
			name:   "new ClusterIP: not bound",
			before: service(drain, tcp("10.96.0.10:80", "10.244.1.5:8080")),
			now:    service(drain, tcp("10.96.0.10:80", "10.244.1.5:8080"), tcp("[fd00::10]:80", "[fd00:244::5]:8080")),
			during: "-A -t 10.96.0.10:80 -s rr\n-a -t 10.96.0.10:80 -r 10.244.1.5:8080 -m -w 1\n",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			if !tc.before.IsZero() {
				h.sync("ns/web", tc.before)
			}
			vipsBefore, _ := h.vips.List()
			h.rules.SetError(fake.Update, unix.ENOBUFS)
			if _, err := h.s.SyncService(h.ctx, "ns/web", tc.now); !errors.Is(err, unix.ENOBUFS) {
				t.Fatalf("err = %v, want the nftables error", err)
			}
			vs, _ := ipvs.Snapshot(h.ipvs)
			if got := ipvs.Render(vs); got != tc.during {
				t.Errorf("while nftables fails the kernel holds\n%s\nwant\n%s", got, tc.during)
			}
			if vips, _ := h.vips.List(); len(vips) > len(vipsBefore) {
				t.Errorf("VIPs %v bound although their ClusterIP elements are missing (before: %v)", vips, vipsBefore)
			}

			h.rules.SetError(fake.Update, nil)
			h.sync("ns/web", tc.now)
			want := newHarness(t)
			want.sync("ns/web", tc.now)
			if got, w := h.state(), want.state(); got != w {
				t.Errorf("after the retry:\n%s\nwant\n%s", got, w)
			}
		})
	}
}

// TestAuditFailsClosedOnNftables: after a flush, an audit that cannot put the nftables elements back does
// not restore the real servers either: they would route without their hairpin elements.
func TestAuditFailsClosedOnNftables(t *testing.T) {
	h := newHarness(t)
	h.sync("ns/web", service(drain, tcp("10.96.0.10:80", "10.244.1.5:8080")))
	want := h.state()
	h.ipvs.Flush()
	if err := h.rules.Delete(); err != nil { // `nft flush ruleset` too
		t.Fatal(err)
	}
	h.rules.SetError(fake.Update, unix.ENOBUFS)
	if err := h.s.Resync(h.ctx); !errors.Is(err, unix.ENOBUFS) {
		t.Fatalf("Resync err = %v, want the nftables error", err)
	}
	if vs, _ := ipvs.Snapshot(h.ipvs); len(vs) != 0 {
		t.Errorf("virtual servers restored without their nftables elements: %v", vs)
	}
	h.rules.SetError(fake.Update, nil)
	if err := h.s.Resync(h.ctx); err != nil {
		t.Fatal(err)
	}
	if got := h.state(); got != want {
		t.Errorf("after the retry:\n%s\nwant\n%s", got, want)
	}
}

// TestAuditOfAnUnchangedKernelKeepsTheCache: an audit that finds a Service as the cache has it only copies
// the connection counts into the cache (no new maps for every Service at every audit); one that finds a
// real server's weight changed rebuilds that Service's cache and repairs it.
func TestAuditOfAnUnchangedKernelKeepsTheCache(t *testing.T) {
	h := newHarness(t)
	h.sync("ns/a", service(0, tcp("10.96.0.1:80", "10.244.1.1:8080", "10.244.1.2:8080")))
	k, d1 := skey(ipvs.TCP, "10.96.0.1:80"), dkey("10.244.1.1:8080")
	e := h.s.entries["ns/a"]
	servers, dests := e.servers, e.servers[k].dests
	if err := h.ipvs.SetConnections(k, d1, 3, 1); err != nil {
		t.Fatal(err)
	}
	if err := h.s.Audit(h.ctx); err != nil {
		t.Fatal(err)
	}
	if !sameMap(servers, e.servers) || !sameMap(dests, e.servers[k].dests) {
		t.Errorf("an audit of an unchanged kernel replaced the Service's cached maps")
	}
	if got := e.servers[k].dests[d1].DestinationStats; got != (ipvs.DestinationStats{ActiveConnections: 3, InactiveConnections: 1}) {
		t.Errorf("cached counts after the audit: %+v, want 3 active, 1 inactive", got)
	}
	if r := h.metrics.lastAudit(); r.Services != 0 {
		t.Errorf("audit of an unchanged kernel: %+v, want no Service repaired", r)
	}

	if err := h.ipvs.UpdateDestination(k, ipvs.Destination{DestinationKey: d1, Weight: 7}); err != nil {
		t.Fatal(err)
	}
	if err := h.s.Audit(h.ctx); err != nil {
		t.Fatal(err)
	}
	if r := h.metrics.lastAudit(); r.Services != 1 {
		t.Errorf("audit after a weight changed by hand: %+v, want 1 Service repaired", r)
	}
	obs, err := h.ipvs.Destinations(k)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range obs {
		if o.Weight != 1 {
			t.Errorf("real server %s at weight %d after the audit, want 1", o.DestinationKey, o.Weight)
		}
	}
}

func sameMap[K comparable, V any](a, b map[K]V) bool {
	return reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer()
}
