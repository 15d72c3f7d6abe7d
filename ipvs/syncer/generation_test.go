package syncer

import (
	"context"
	"net/netip"
	"slices"
	"testing"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
	"github.com/ipvs-operator/ipvs-operator/ipvs/fake"
)

// generationRules is fake Rules that says whether anything but the agent's updates changed the sets
// (as nftrules.Table does from the ruleset generation), and counts the reads of the elements.
type generationRules struct {
	*fake.Rules
	unchanged bool
	reads     int
}

func (r *generationRules) Elements() (ipvs.RuleElements, error) {
	r.reads++
	return r.Rules.Elements()
}

func (r *generationRules) UnchangedSinceElements() (bool, error) { return r.unchanged, nil }

// TestAuditSkipsTheElementReadWhenUnchanged: an audit reads the sets only when something else may have
// changed them, and still repairs what someone removed when it does.
func TestAuditSkipsTheElementReadWhenUnchanged(t *testing.T) {
	ctx := context.Background()
	rules := &generationRules{Rules: fake.NewRules()}
	s := New(fake.New(), fake.NewVIPs(), rules, clocktesting.NewFakePassiveClock(t0), Options{})
	if err := s.Adopt(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SyncService(ctx, "ns/web", service(0, tcp("10.96.0.10:80", "10.244.1.5:8080"))); err != nil {
		t.Fatal(err)
	}
	want, _ := rules.Rules.Elements()
	audit := func(when string, reads int) {
		t.Helper()
		if err := s.Audit(ctx); err != nil {
			t.Fatal(err)
		}
		if rules.reads != reads {
			t.Errorf("%s: %d reads of the elements, want %d", when, rules.reads, reads)
		}
		if got, _ := rules.Rules.Elements(); !equalElements(got, want) {
			t.Errorf("%s: elements %+v, want %+v", when, got, want)
		}
	}
	rules.reads = 0
	audit("changed", 1)
	rules.unchanged = true
	audit("unchanged", 1)
	// Someone removes an element; the generation tells, and the audit reads and repairs.
	if err := rules.Rules.Update(ipvs.RuleElements{}, ipvs.RuleElements{Endpoints: []netip.Addr{netip.MustParseAddr("10.244.1.5")}}); err != nil {
		t.Fatal(err)
	}
	rules.unchanged = false
	audit("an element removed behind the agent's back", 2)
}

func equalElements(a, b ipvs.RuleElements) bool {
	return slices.Equal(a.ClusterIPs, b.ClusterIPs) && slices.Equal(a.Endpoints, b.Endpoints) && slices.Equal(a.Ports, b.Ports)
}
