package nftrules_test

import (
	"os/exec"
	"testing"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
	"github.com/ipvs-operator/ipvs-operator/ipvs/nftrules"
)

var _ ipvs.RulesGeneration = (*nftrules.Table)(nil)

// TestUnchangedSinceElements: the table's own updates and repairs keep the sets known without a read; any
// commit by another program, to its table or any other, and the table's deletion, call for one.
func TestUnchangedSinceElements(t *testing.T) {
	tb, n := newTable(t)
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("no nft binary to commit with")
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	nft := func(args ...string) {
		t.Helper()
		if out, err := n.run("nft", args...); err != nil {
			t.Fatalf("nft %v: %v\n%s", args, err, out)
		}
	}
	read := func() {
		t.Helper()
		_, err := tb.Elements()
		must(err)
	}
	check := func(when string, want bool) {
		t.Helper()
		got, err := tb.UnchangedSinceElements()
		if err != nil || got != want {
			t.Errorf("%s: UnchangedSinceElements() = %v, %v; want %v", when, got, err, want)
		}
	}
	must(tb.Ensure(prefixes("10.244.0.0/16")))
	check("never read", false)
	read()
	check("read, nothing since", true)
	must(tb.Update(ipvs.RuleElements{ClusterIPs: addrs("10.96.0.10"), Endpoints: addrs("10.244.1.5"),
		Ports: []ipvs.ServiceKey{svcKey("10.96.0.10", ipvs.TCP, 80)}}, ipvs.RuleElements{}))
	must(tb.Update(ipvs.RuleElements{}, ipvs.RuleElements{Endpoints: addrs("10.244.1.5", "10.244.1.6")}))
	check("the table's own updates", true)
	check("asked twice", true)

	nft("delete", "element", "inet", nftrules.TableName, nftrules.SetClusterIPs4, "{ 10.96.0.10 }")
	check("an element deleted by nft", false)
	read()
	check("read again", true)

	nft("add", "table", "ip", "unrelated")
	check("another table created", false)
	read()
	// Every audit ensures the table before it asks: a repair in place is two of the table's own commits.
	must(tb.Ensure(prefixes("10.244.0.0/16", "fd00:10:244::/56")))
	check("after Ensure", true)
	must(tb.Delete())
	check("after Delete", false)
}
