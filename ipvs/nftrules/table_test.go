package nftrules_test

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"testing"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
	"github.com/ipvs-operator/ipvs-operator/ipvs/nftrules"
)

// testNS is a fresh network namespace for one test: nothing the test programs touches the host.
type testNS struct {
	ns netns.NsHandle
}

func newTestNS(t *testing.T) *testNS {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	ns, err := netns.New() // also moves this thread into it
	if err != nil {
		t.Skipf("cannot create a network namespace: %v", err)
	}
	if err := netns.Set(orig); err != nil {
		t.Fatal(err) // the thread stays locked and is discarded, but say so
	}
	t.Cleanup(func() { ns.Close() })
	return &testNS{ns: ns}
}

// run runs a command inside the namespace: a child inherits the network namespace of the thread that
// forks it.
func (n *testNS) run(name string, args ...string) (string, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return "", err
	}
	defer orig.Close()
	if err := netns.Set(n.ns); err != nil {
		return "", err
	}
	out, err := exec.Command(name, args...).CombinedOutput()
	if err2 := netns.Set(orig); err2 != nil {
		panic(fmt.Sprintf("cannot return to the original network namespace: %v", err2))
	}
	return string(out), err
}

func newTable(t *testing.T) (*nftrules.Table, *testNS) {
	t.Helper()
	n := newTestNS(t)
	tb, err := nftrules.New(nftrules.WithNetNS(int(n.ns)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tb.Close() })
	if err := tb.Delete(); err != nil { // also proves nf_tables answers
		t.Skipf("nf_tables not usable here: %v", err)
	}
	return tb, n
}

// listTable returns `nft list table inet ipvs-operator`, or skips when there is no nft binary.
func listTable(t *testing.T, n *testNS) string {
	t.Helper()
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("no nft binary to compare with")
	}
	out, err := n.run("nft", "list", "table", "inet", nftrules.TableName)
	if err != nil {
		t.Fatalf("nft list table: %v\n%s", err, out)
	}
	return out
}

func addrs(s ...string) []netip.Addr {
	out := make([]netip.Addr, 0, len(s))
	for _, a := range s {
		out = append(out, netip.MustParseAddr(a))
	}
	return out
}

func svcKey(addr string, p ipvs.Protocol, port uint16) ipvs.ServiceKey {
	return ipvs.ServiceKey{Address: netip.MustParseAddr(addr), Protocol: p, Port: port}
}

func prefixes(s ...string) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(s))
	for _, p := range s {
		out = append(out, netip.MustParsePrefix(p))
	}
	return out
}

func TestTableAgainstKernel(t *testing.T) {
	tb, n := newTable(t)
	cidrs := prefixes("10.244.0.0/16", "10.244.5.0/24", "10.245.0.0/16", "fd00:10:244::/56", "fd00:10:245::/56", "192.168.7.7/32", "172.16.0.1/32", "172.16.0.3/32")
	if err := tb.Ensure(cidrs); err != nil {
		t.Fatal(err)
	}
	want := ipvs.RuleElements{
		ClusterIPs: addrs("10.96.0.1", "10.96.0.10", "10.96.0.11", "192.168.0.1", "fd00::1", "fd00::10"),
		Endpoints:  addrs("10.244.1.2", "10.244.2.3", "10.244.2.4", "fd00:10:244::2", "fd00:10:244::3"),
		Ports: []ipvs.ServiceKey{
			svcKey("10.96.0.1", ipvs.TCP, 443), svcKey("10.96.0.10", ipvs.TCP, 53), svcKey("10.96.0.10", ipvs.UDP, 53),
			svcKey("10.96.0.10", ipvs.TCP, 9153), svcKey("10.96.0.11", ipvs.SCTP, 9999), svcKey("192.168.0.1", ipvs.TCP, 65535),
			svcKey("fd00::1", ipvs.UDP, 53), svcKey("fd00::10", ipvs.TCP, 80), svcKey("fd00::10", ipvs.SCTP, 80),
		},
	}
	// Removing absent elements in the same update is not an error.
	absent := ipvs.RuleElements{ClusterIPs: addrs("10.96.9.9"), Endpoints: addrs("fd00::99"), Ports: []ipvs.ServiceKey{svcKey("10.96.9.9", ipvs.TCP, 1)}}
	if err := tb.Update(want, absent); err != nil {
		t.Fatal(err)
	}
	check := func(step string, want ipvs.RuleElements) {
		t.Helper()
		got, err := tb.Elements()
		if err != nil {
			t.Fatalf("%s: Elements: %v", step, err)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: Elements() = %v, want %v", step, got, want)
		}
		if listed, rendered := listTable(t, n), nftrules.Render(cidrs, want); listed != rendered {
			t.Errorf("%s: nft list table differs from Render:\n--- nft\n%s--- Render\n%s", step, listed, rendered)
		}
	}
	check("after update", want)

	// Ensure again keeps the elements and does not duplicate rules.
	if err := tb.Ensure(cidrs); err != nil {
		t.Fatal(err)
	}
	check("after second Ensure", want)

	remove := ipvs.RuleElements{ClusterIPs: addrs("10.96.0.11", "fd00::1"), Endpoints: addrs("10.244.2.4"),
		Ports: []ipvs.ServiceKey{svcKey("10.96.0.11", ipvs.SCTP, 9999), svcKey("10.96.0.10", ipvs.UDP, 53), svcKey("fd00::1", ipvs.UDP, 53)}}
	if err := tb.Update(ipvs.RuleElements{}, remove); err != nil {
		t.Fatal(err)
	}
	want = ipvs.RuleElements{
		ClusterIPs: addrs("10.96.0.1", "10.96.0.10", "192.168.0.1", "fd00::10"),
		Endpoints:  addrs("10.244.1.2", "10.244.2.3", "fd00:10:244::2", "fd00:10:244::3"),
		Ports: []ipvs.ServiceKey{
			svcKey("10.96.0.1", ipvs.TCP, 443), svcKey("10.96.0.10", ipvs.TCP, 53), svcKey("10.96.0.10", ipvs.TCP, 9153),
			svcKey("192.168.0.1", ipvs.TCP, 65535), svcKey("fd00::10", ipvs.TCP, 80), svcKey("fd00::10", ipvs.SCTP, 80),
		},
	}
	check("after removal", want)

	if err := tb.Delete(); err != nil {
		t.Fatal(err)
	}
	if err := tb.Delete(); err != nil {
		t.Errorf("second Delete: %v", err)
	}
	if _, err := tb.Elements(); !errors.Is(err, unix.ENOENT) {
		t.Errorf("Elements without table: %v, want ENOENT", err)
	}
	if err := tb.Update(want, ipvs.RuleElements{}); !errors.Is(err, unix.ENOENT) {
		t.Errorf("Update without table: %v, want ENOENT", err)
	}
}

// TestEnsureRepairs replaces a table of an incompatible layout and restores deleted rules.
func TestEnsureRepairs(t *testing.T) {
	tb, n := newTable(t)
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("no nft binary to damage the table with")
	}
	old := "table inet " + nftrules.TableName + " {\n set clusterips4 { type inet_service; elements = { 80 } }\n chain stray { }\n}\n"
	if out, err := n.run("nft", old); err != nil {
		t.Fatalf("nft: %v\n%s", err, out)
	}
	cidrs := prefixes("10.244.0.0/16")
	if err := tb.Ensure(cidrs); err != nil {
		t.Fatal(err)
	}
	if got, want := listTable(t, n), nftrules.Render(cidrs, ipvs.RuleElements{}); got != want {
		t.Errorf("after repair:\n--- nft\n%s--- Render\n%s", got, want)
	}
	if err := tb.Update(ipvs.RuleElements{ClusterIPs: addrs("10.96.0.10")}, ipvs.RuleElements{}); err != nil {
		t.Fatal(err)
	}
	if out, err := n.run("nft", "flush", "chain", "inet", nftrules.TableName, nftrules.ChainInput); err != nil {
		t.Fatalf("nft flush chain: %v\n%s", err, out)
	}
	if err := tb.Ensure(cidrs); err != nil {
		t.Fatal(err)
	}
	if got, want := listTable(t, n), nftrules.Render(cidrs, ipvs.RuleElements{ClusterIPs: addrs("10.96.0.10")}); got != want {
		t.Errorf("after restoring rules:\n--- nft\n%s--- Render\n%s", got, want)
	}
}

// TestLargeUpdate crosses the per-batch element limit.
func TestLargeUpdate(t *testing.T) {
	tb, _ := newTable(t)
	if err := tb.Ensure(nil); err != nil {
		t.Fatal(err)
	}
	var el ipvs.RuleElements
	for i := range 3000 {
		el.ClusterIPs = append(el.ClusterIPs, netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)}))
		el.Endpoints = append(el.Endpoints, netip.AddrFrom16([16]byte{0xfd, 0, 0x10, 0x24, 14: byte(i >> 8), 15: byte(i)}))
	}
	if err := tb.Update(el, ipvs.RuleElements{}); err != nil {
		t.Fatal(err)
	}
	got, err := tb.Elements()
	if err != nil {
		t.Fatal(err)
	}
	if len(got.ClusterIPs) != 3000 || len(got.Endpoints) != 3000 {
		t.Fatalf("got %d ClusterIPs and %d endpoints, want 3000 each", len(got.ClusterIPs), len(got.Endpoints))
	}
	if err := tb.Update(ipvs.RuleElements{}, el); err != nil {
		t.Fatal(err)
	}
	if got, err := tb.Elements(); err != nil || len(got.ClusterIPs)+len(got.Endpoints) != 0 {
		t.Errorf("after removing all: %v, %v", got, err)
	}
}

func TestInvalidInput(t *testing.T) {
	tb, _ := newTable(t)
	if err := tb.Ensure([]netip.Prefix{{}}); !errors.Is(err, unix.EINVAL) {
		t.Errorf("Ensure(invalid prefix) = %v, want EINVAL", err)
	}
	if err := tb.Update(ipvs.RuleElements{ClusterIPs: []netip.Addr{{}}}, ipvs.RuleElements{}); !errors.Is(err, unix.EINVAL) {
		t.Errorf("Update(invalid address) = %v, want EINVAL", err)
	}
	if err := tb.Update(ipvs.RuleElements{Ports: []ipvs.ServiceKey{svcKey("10.96.0.1", ipvs.Protocol(1), 0)}}, ipvs.RuleElements{}); !errors.Is(err, unix.EINVAL) {
		t.Errorf("Update(ICMP virtual server) = %v, want EINVAL", err)
	}
}

// TestExists is the drift canary's probe: it tells a missing table, including one deleted by someone
// else's `nft flush ruleset`, from a present one, with no error either way.
func TestExists(t *testing.T) {
	tb, n := newTable(t)
	check := func(when string, want bool) {
		t.Helper()
		if got, err := tb.Exists(); err != nil || got != want {
			t.Errorf("%s: Exists() = %v, %v; want %v", when, got, err, want)
		}
	}
	check("before Ensure", false)
	if err := tb.Ensure(prefixes("10.244.0.0/16")); err != nil {
		t.Fatal(err)
	}
	check("after Ensure", true)
	if err := tb.Delete(); err != nil {
		t.Fatal(err)
	}
	check("after Delete", false)
	if err := tb.Ensure(nil); err != nil {
		t.Fatal(err)
	}
	if _, err := exec.LookPath("nft"); err != nil {
		return
	}
	if out, err := n.run("nft", "flush", "ruleset"); err != nil {
		t.Fatalf("nft flush ruleset: %v\n%s", err, out)
	}
	check("after nft flush ruleset", false)
}
