package syncer

import (
	"fmt"
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
)

// gatedRules holds every Elements call, once armed, after its read: the caller then holds what the sets had
// before the test goes on, as an audit does whose dump is overtaken by a Service's update.
type gatedRules struct {
	ipvs.Rules
	armed   atomic.Bool
	reads   atomic.Int32
	held    chan struct{}
	release chan struct{}
}

func (g *gatedRules) Elements() (ipvs.RuleElements, error) {
	els, err := g.Rules.Elements()
	g.reads.Add(1)
	if g.armed.Load() {
		g.held <- struct{}{}
		<-g.release
	}
	return els, err
}

// gateRules restarts the harness's Syncer over a gatedRules in front of the fake sets.
func (h *harness) gateRules() *gatedRules {
	h.t.Helper()
	g := &gatedRules{Rules: h.rules, held: make(chan struct{}), release: make(chan struct{})}
	h.s = New(h.ipvs, h.vips, g, h.clock, Options{Metrics: h.metrics, PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}})
	if err := h.s.Adopt(h.ctx); err != nil {
		h.t.Fatal(err)
	}
	return g
}

func (h *harness) hasEndpoint(a string) bool {
	h.t.Helper()
	els, err := h.rules.Elements()
	if err != nil {
		h.t.Fatal(err)
	}
	return slices.Contains(els.Endpoints, addr(a))
}

// TestAuditSetReadRacingSyncs: Services are synced while the audit dumps the nftables sets, so the dump
// (taken before them) is stale for the elements they changed. The syncs must not wait for the audit, the
// audit must read the sets once (not again and again on a busy node, nor under the lock), and it must not
// take the stale dump's word for those elements: neither "repairing" a change back, nor believing an
// element present that the sync removed (a later sync that needs it again would then skip adding it, and
// its hairpin connections would break until the next audit).
func TestAuditSetReadRacingSyncs(t *testing.T) {
	h := newHarness(t)
	g := h.gateRules()
	h.sync("ns/a", service(drain, tcp("10.96.0.10:80", "10.244.1.5:8080")))
	h.sync("ns/b", service(drain, tcp("10.96.0.20:80", "10.244.2.5:8080")))

	g.reads.Store(0)
	g.armed.Store(true)
	done := h.auditInBackground()
	<-g.held // the dump holds 10.244.1.5 and not 10.244.1.6
	// ns/a moves from 10.244.1.5 to 10.244.1.6: one element removed, one added, behind the dump's back.
	if _, err := h.syncWhileHeld("ns/a", service(drain, tcp("10.96.0.10:80", "10.244.1.6:8080"))); err != nil {
		t.Fatal(err)
	}
	// Someone removes ns/b's element meanwhile; the dump cannot see it: the next audit repairs it.
	if err := h.rules.Update(ipvs.RuleElements{}, ipvs.RuleElements{Endpoints: []netip.Addr{addr("10.244.2.5")}}); err != nil {
		t.Fatal(err)
	}
	g.armed.Store(false)
	close(g.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := g.reads.Load(); n != 1 {
		t.Errorf("the audit read the sets %d times, want once", n)
	}
	if rep := h.metrics.lastAudit(); rep.Elements != 0 {
		t.Errorf("audit report %+v: it repaired elements a sync had just changed", rep)
	}
	if !h.hasEndpoint("10.244.1.6") || h.hasEndpoint("10.244.1.5") {
		t.Errorf("after the audit the sets hold 10.244.1.6: %v, 10.244.1.5: %v; want the sync's change kept",
			h.hasEndpoint("10.244.1.6"), h.hasEndpoint("10.244.1.5"))
	}

	// Back to 10.244.1.5: its element must be added again, although the stale dump had it.
	h.sync("ns/a", service(drain, tcp("10.96.0.10:80", "10.244.1.5:8080")))
	if !h.hasEndpoint("10.244.1.5") {
		t.Error("10.244.1.5 is missing from the sets after its Service wanted it again")
	}
	// The next audit finds ns/b's element missing and puts it back.
	if err := h.s.Audit(h.ctx); err != nil {
		t.Fatal(err)
	}
	if rep := h.metrics.lastAudit(); rep.Elements != 1 || !h.hasEndpoint("10.244.2.5") {
		t.Errorf("audit report %+v, 10.244.2.5 in the sets: %v; want it put back", rep, h.hasEndpoint("10.244.2.5"))
	}
	if got, want := h.state(), func() string {
		w := newHarness(t)
		w.sync("ns/a", service(drain, tcp("10.96.0.10:80", "10.244.1.5:8080")))
		w.sync("ns/b", service(drain, tcp("10.96.0.20:80", "10.244.2.5:8080")))
		return w.state()
	}(); got != want {
		t.Errorf("kernel:\n%s\nwant\n%s", got, want)
	}
}

// TestAuditNeverHoldsSyncsUpOnABusyNode: on a node where some Service changes during every dump of the
// sets, the audit must neither re-read them until a dump is not overtaken (it would never end) nor read
// them with the sets' lock held (every Service's update would wait for the whole dump).
func TestAuditNeverHoldsSyncsUpOnABusyNode(t *testing.T) {
	h := newHarness(t)
	g := h.gateRules()
	h.sync("ns/a", service(drain, tcp("10.96.0.10:80", "10.244.1.5:8080")))
	g.reads.Store(0)
	g.armed.Store(true)
	done := h.auditInBackground()
	for i := 0; ; i++ {
		select {
		case <-g.held:
			ep := fmt.Sprintf("10.244.1.%d:8080", 6+i%2)
			if _, err := h.syncWhileHeld("ns/a", service(drain, tcp("10.96.0.10:80", ep))); err != nil {
				t.Fatal(err)
			}
			g.release <- struct{}{}
			continue
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		}
		break
	}
	if n := g.reads.Load(); n != 1 {
		t.Errorf("the audit read the sets %d times, want once", n)
	}
	g.armed.Store(false)
	if err := h.s.Audit(h.ctx); err != nil {
		t.Fatal(err)
	}
	if rep := h.metrics.lastAudit(); rep.Findings() != 0 {
		t.Errorf("a second audit found %+v: the first one left the cache wrong", rep)
	}
}
