package takeover_test

import (
	"context"
	"errors"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/utils/clock"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
	"github.com/ipvs-operator/ipvs-operator/ipvs/fake"
	"github.com/ipvs-operator/ipvs-operator/ipvs/plan"
	"github.com/ipvs-operator/ipvs-operator/ipvs/syncer"
	"github.com/ipvs-operator/ipvs-operator/ipvs/takeover"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(string(want), got); d != "" {
		t.Errorf("%s (-want +got):\n%s", name, d)
	}
}

func addrs(s ...string) []netip.Addr {
	out := make([]netip.Addr, len(s))
	for i, a := range s {
		out[i] = netip.MustParseAddr(a)
	}
	return out
}

func TestPlanAdopt(t *testing.T) {
	for _, tc := range []struct {
		name              string
		theirs, ours, srv []netip.Addr
		want              string
	}{
		{name: "nothing on kube-ipvs0", srv: addrs("10.96.0.10"), want: ""},
		{name: "served ClusterIPs only, in address order", theirs: addrs("10.96.0.20", "10.96.0.10", "fd00::10", "203.0.113.5"),
			srv:  addrs("10.96.0.10", "10.96.0.20", "fd00::10"),
			want: "ip addr add 10.96.0.10/32 dev ipvs0\nip addr add 10.96.0.20/32 dev ipvs0\nip addr add fd00::10/128 dev ipvs0\n"},
		{name: "already on the agent's device (a restarted takeover)", theirs: addrs("10.96.0.10", "10.96.0.20"),
			ours: addrs("10.96.0.10"), srv: addrs("10.96.0.10", "10.96.0.20"), want: "ip addr add 10.96.0.20/32 dev ipvs0\n"},
		{name: "a Service the agent does not serve stays with kube-proxy", theirs: addrs("10.96.0.30"), srv: addrs("10.96.0.10"), want: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := takeover.Render(takeover.PlanAdopt(tc.theirs, tc.ours, sets.New(tc.srv...), "ipvs0"))
			if got != tc.want {
				t.Errorf("got:\n%swant:\n%s", got, tc.want)
			}
		})
	}
}

// kubeProxyLeftovers is what kube-proxy v1.37.1's IPVS mode leaves in a dual-stack node, plus kubelet's
// chains and another program's set, which must stay; its IPv4 chains are in both backends, as on a node
// whose kube-proxy image switched from iptables-legacy to iptables-nft.
func kubeProxyLeftovers() takeover.Leftovers {
	chains := func(extra ...takeover.Chain) []takeover.Chain {
		return append(slices.Clone(takeover.KubeProxyChains), append([]takeover.Chain{
			{Table: "nat", Name: "PREROUTING"}, {Table: "nat", Name: "OUTPUT"}, {Table: "nat", Name: "POSTROUTING"},
			{Table: "filter", Name: "INPUT"}, {Table: "filter", Name: "FORWARD"}, {Table: "filter", Name: "OUTPUT"},
			{Table: "filter", Name: "KUBE-FIREWALL"}, {Table: "nat", Name: "KUBE-KUBELET-CANARY"},
		}, extra...)...)
	}
	jumps := []takeover.Jump{
		{From: takeover.Chain{Table: "nat", Name: "PREROUTING"}, To: "KUBE-SERVICES", Handle: 4},
		{From: takeover.Chain{Table: "nat", Name: "OUTPUT"}, To: "KUBE-SERVICES", Handle: 7},
		{From: takeover.Chain{Table: "nat", Name: "POSTROUTING"}, To: "KUBE-POSTROUTING", Handle: 9},
		{From: takeover.Chain{Table: "filter", Name: "INPUT"}, To: "KUBE-IPVS-FILTER", Handle: 12},
		{From: takeover.Chain{Table: "filter", Name: "INPUT"}, To: "KUBE-NODE-PORT", Handle: 11},
		{From: takeover.Chain{Table: "filter", Name: "FORWARD"}, To: "KUBE-FORWARD", Handle: 3},
		{From: takeover.Chain{Table: "filter", Name: "OUTPUT"}, To: "KUBE-IPVS-OUT-FILTER", Handle: 15},
		// kubelet's: stays
		{From: takeover.Chain{Table: "filter", Name: "INPUT"}, To: "KUBE-FIREWALL", Handle: 2},
	}
	return takeover.Leftovers{
		Interface: true,
		Chains: map[takeover.Ruleset][]takeover.Chain{
			{Backend: takeover.NFT, Family: takeover.IPv4}: chains(), {Backend: takeover.NFT, Family: takeover.IPv6}: chains(),
			{Backend: takeover.Legacy, Family: takeover.IPv4}: chains(),
		},
		Jumps: map[takeover.Ruleset][]takeover.Jump{
			{Backend: takeover.NFT, Family: takeover.IPv4}: jumps, {Backend: takeover.NFT, Family: takeover.IPv6}: jumps[:3],
			{Backend: takeover.Legacy, Family: takeover.IPv4}: legacyJumps(jumps),
		},
		Sets: []string{"KUBE-CLUSTER-IP", "KUBE-LOOP-BACK", "KUBE-IPVS-IPS", "KUBE-NODE-PORT-TCP", "KUBE-6-CLUSTER-IP",
			"KUBE-6-LOAD-BALANCER-SOURCE-CID", "cali40all-ipam-pools", "KUBE-EXTRA-NOT-OURS"},
	}
}

// legacyJumps numbers the jumps as iptables-legacy identifies them: by their place in their chain.
func legacyJumps(jumps []takeover.Jump) []takeover.Jump {
	out := slices.Clone(jumps)
	n := map[takeover.Chain]uint64{}
	for i := range out {
		n[out[i].From]++
		out[i].Handle = n[out[i].From]
	}
	return out
}

// firewalls splits leftovers into a fake Firewall per backend.
func firewalls(l takeover.Leftovers) (nft, legacy *fakeFirewall) {
	nft = &fakeFirewall{chains: map[takeover.Family][]takeover.Chain{}, jumps: map[takeover.Family][]takeover.Jump{}}
	legacy = &fakeFirewall{chains: map[takeover.Family][]takeover.Chain{}, jumps: map[takeover.Family][]takeover.Jump{}}
	for rs, c := range l.Chains {
		fw := nft
		if rs.Backend == takeover.Legacy {
			fw = legacy
		}
		fw.chains[rs.Family], fw.jumps[rs.Family] = slices.Clone(c), slices.Clone(l.Jumps[rs])
	}
	return nft, legacy
}

func TestPlanLeftovers(t *testing.T) {
	golden(t, "leftovers.golden", takeover.Render(takeover.PlanLeftovers(kubeProxyLeftovers())))
	if got := takeover.PlanLeftovers(takeover.Leftovers{}); len(got) != 0 {
		t.Errorf("nothing left, got %v", got)
	}
}

// fakeFirewall is an in-memory iptables-nft: Delete refuses, as the kernel does, to delete a chain that a
// remaining rule jumps to.
type fakeFirewall struct {
	chains map[takeover.Family][]takeover.Chain
	jumps  map[takeover.Family][]takeover.Jump
}

func (f *fakeFirewall) Read(fam takeover.Family) ([]takeover.Chain, []takeover.Jump, error) {
	return f.chains[fam], f.jumps[fam], nil
}

func (f *fakeFirewall) Delete(fam takeover.Family, jumps []takeover.Jump, chains []takeover.Chain) error {
	f.jumps[fam] = slices.DeleteFunc(f.jumps[fam], func(j takeover.Jump) bool { return slices.Contains(jumps, j) })
	for _, j := range f.jumps[fam] {
		if slices.Contains(chains, takeover.Chain{Table: j.From.Table, Name: j.To}) {
			return os.ErrInvalid // EBUSY in the kernel
		}
	}
	f.chains[fam] = slices.DeleteFunc(f.chains[fam], func(c takeover.Chain) bool { return slices.Contains(chains, c) })
	return nil
}

type fakeSets struct{ names []string }

func (f *fakeSets) List() ([]string, error) { return f.names, nil }
func (f *fakeSets) Destroy(name string) error {
	f.names = slices.DeleteFunc(f.names, func(n string) bool { return n == name })
	return nil
}

func vs(key string, sched string, dests ...string) ipvs.VirtualServer {
	k := ipvs.ServiceKey{Protocol: ipvs.TCP}
	if key[0] == 'u' {
		k.Protocol = ipvs.UDP
	}
	ap := netip.MustParseAddrPort(key[2:])
	k.Address, k.Port = ap.Addr(), ap.Port()
	v := ipvs.VirtualServer{Service: ipvs.Service{ServiceKey: k, Scheduler: sched}}
	for _, d := range dests {
		dp := netip.MustParseAddrPort(d)
		v.Destinations = append(v.Destinations, ipvs.Destination{DestinationKey: ipvs.DestinationKey{Address: dp.Addr(), Port: dp.Port()}, Weight: 1})
	}
	return v
}

// TestTakeoverKeepsKubeProxysVirtualServers runs a whole takeover against the fakes: kube-proxy's virtual
// servers for the Service the agent serves are edited in place (never deleted and re-created, their VIP
// never unbound), the rest of the table is left alone, and the leftovers go only at the end.
func TestTakeoverKeepsKubeProxysVirtualServers(t *testing.T) {
	ctx := context.Background()
	kernel := fake.New()
	// What kube-proxy's IPVS mode programmed: web (TCP 80, UDP 53) and other (a Service labelled for yet
	// another proxy, so not the agent's), on kube-ipvs0; a NodePort on the node's own address.
	before := []ipvs.VirtualServer{
		vs("t 10.96.0.10:80", "rr", "10.244.1.2:8080", "10.244.2.3:8080"),
		vs("u 10.96.0.10:53", "rr", "10.244.1.2:5353", "10.244.2.3:5353"),
		vs("t 10.96.0.20:443", "rr", "10.244.1.9:8443"),
		vs("t 192.168.100.11:30080", "rr", "10.244.1.2:8080", "10.244.2.3:8080"),
	}
	for _, v := range before {
		if err := kernel.AddService(v.Service); err != nil {
			t.Fatal(err)
		}
		for _, d := range v.Destinations {
			if err := kernel.AddDestination(v.ServiceKey, d); err != nil {
				t.Fatal(err)
			}
		}
	}
	kubeIPVS0, ipvs0 := fake.NewVIPs(), fake.NewVIPs()
	if err := kubeIPVS0.EnsureInterface(); err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs("10.96.0.10", "10.96.0.20") {
		if err := kubeIPVS0.Bind(a); err != nil {
			t.Fatal(err)
		}
	}
	l := kubeProxyLeftovers()
	fw, legacy := firewalls(l)
	ipsets := &fakeSets{names: l.Sets}
	tk := &takeover.Takeover{Agent: ipvs0, KubeProxy: kubeIPVS0, AgentDevice: "ipvs0", Firewall: fw, Legacy: legacy, Sets: ipsets}

	// 1. Adopt: the served ClusterIP goes on the agent's device too.
	steps, err := tk.Adopt(ctx, sets.New(addrs("10.96.0.10")...))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := takeover.Render(steps), "ip addr add 10.96.0.10/32 dev ipvs0\n"; got != want {
		t.Errorf("adopt: %q, want %q", got, want)
	}
	// 2. The agent starts as usual: it adopts what is on its VIPs, syncs the Service (one endpoint moved
	// while nothing programmed it, and the policy wants lc on TCP 80), then audits.
	kernel.ResetOps()
	s := syncer.New(kernel, ipvs0, fake.NewRules(), clock.RealClock{}, syncer.Options{})
	if err := s.Adopt(ctx); err != nil {
		t.Fatal(err)
	}
	web := vs("t 10.96.0.10:80", "lc", "10.244.1.2:8080", "10.244.2.4:8080")
	dns := vs("u 10.96.0.10:53", "rr", "10.244.1.2:5353", "10.244.2.3:5353")
	if _, err := s.SyncService(ctx, "default/web", plan.Desired{VIPs: addrs("10.96.0.10"), Servers: []ipvs.VirtualServer{web, dns}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Audit(ctx); err != nil {
		t.Fatal(err)
	}
	ops := kernel.Ops()
	for _, v := range []fake.Verb{fake.AddService, fake.DeleteService} {
		if ops[v] != 0 {
			t.Errorf("%s: %d, want 0: the takeover must edit kube-proxy's virtual servers in place (ops %v)", v, ops[v], ops)
		}
	}
	if n := ipvs0.Ops()[fake.Unbind]; n != 0 {
		t.Errorf("the agent unbound %d VIPs", n)
	}
	// 3. Leftovers.
	steps, err = tk.RemoveLeftovers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "takeover-leftovers.golden", takeover.Render(steps))
	after, err := ipvs.Snapshot(kernel)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "takeover-before.golden", ipvs.Render(before))
	golden(t, "takeover-after.golden", ipvs.Render(after))
	if kubeIPVS0.InterfaceExists() {
		t.Error("kube-ipvs0 is still there")
	}
	if got, _ := ipvs0.List(); !slices.Equal(got, addrs("10.96.0.10")) {
		t.Errorf("the agent's VIPs: %v", got)
	}
	if want := []string{"cali40all-ipam-pools", "KUBE-EXTRA-NOT-OURS"}; !slices.Equal(ipsets.names, want) {
		t.Errorf("ipsets left: %v, want %v", ipsets.names, want)
	}
	for name, f := range map[string]*fakeFirewall{"nft": fw, "legacy": legacy} {
		for _, fam := range []takeover.Family{takeover.IPv4, takeover.IPv6} {
			for _, c := range f.chains[fam] {
				if slices.Contains(takeover.KubeProxyChains, c) {
					t.Errorf("%s family %d: chain %s left", name, fam, c)
				}
			}
		}
	}
	// A second run finds nothing to do.
	if steps, err := tk.RemoveLeftovers(ctx); err != nil || len(steps) != 0 {
		t.Errorf("second run: %v, %v", steps, err)
	}
}

// failingFirewall refuses every Delete.
type failingFirewall struct{ *fakeFirewall }

var errKernel = errors.New("kernel says no")

func (failingFirewall) Delete(takeover.Family, []takeover.Jump, []takeover.Chain) error {
	return errKernel
}

type failingSets struct{ *fakeSets }

func (failingSets) Destroy(string) error { return errKernel }

// TestRemoveLeftoversFailsStatic: when a removal fails, the error is returned (the agent logs it and tries
// again after its next audit), nothing after the failed step is touched (an ipset still referenced by a chain
// is never destroyed), and the agent's own VIPs stay: the traffic the agent carries does not depend on any
// of it. The next attempt, once the kernel lets it, finishes the job.
func TestRemoveLeftoversFailsStatic(t *testing.T) {
	for _, tc := range []struct {
		name string
		fail func(tk *takeover.Takeover)
	}{
		{name: "iptables-nft", fail: func(tk *takeover.Takeover) { tk.Firewall = failingFirewall{tk.Firewall.(*fakeFirewall)} }},
		{name: "iptables-legacy", fail: func(tk *takeover.Takeover) { tk.Legacy = failingFirewall{tk.Legacy.(*fakeFirewall)} }},
		{name: "ipset", fail: func(tk *takeover.Takeover) { tk.Sets = failingSets{tk.Sets.(*fakeSets)} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			l := kubeProxyLeftovers()
			fw, legacy := firewalls(l)
			ipsets := &fakeSets{names: slices.Clone(l.Sets)}
			kubeIPVS0, ipvs0 := fake.NewVIPs(), fake.NewVIPs()
			for _, v := range []*fake.VIPs{kubeIPVS0, ipvs0} {
				if err := v.EnsureInterface(); err != nil {
					t.Fatal(err)
				}
				if err := v.Bind(netip.MustParseAddr("10.96.0.10")); err != nil {
					t.Fatal(err)
				}
			}
			tk := &takeover.Takeover{Agent: ipvs0, KubeProxy: kubeIPVS0, AgentDevice: "ipvs0", Firewall: fw, Legacy: legacy, Sets: ipsets}
			tc.fail(tk)
			if _, err := tk.RemoveLeftovers(ctx); !errors.Is(err, errKernel) {
				t.Fatalf("RemoveLeftovers = %v, want the kernel's error", err)
			}
			if got, _ := ipvs0.List(); !slices.Equal(got, addrs("10.96.0.10")) {
				t.Errorf("the agent's VIPs after the failure: %v", got)
			}
			if !slices.Equal(ipsets.names, l.Sets) {
				t.Errorf("ipsets destroyed although a step before them failed: %v", ipsets.names)
			}
			// The kernel lets go: the next attempt finishes.
			tk.Firewall, tk.Legacy, tk.Sets = fw, legacy, ipsets
			if _, err := tk.RemoveLeftovers(ctx); err != nil {
				t.Fatal(err)
			}
			if want := []string{"cali40all-ipam-pools", "KUBE-EXTRA-NOT-OURS"}; !slices.Equal(ipsets.names, want) {
				t.Errorf("ipsets left after the retry: %v, want %v", ipsets.names, want)
			}
		})
	}
}
