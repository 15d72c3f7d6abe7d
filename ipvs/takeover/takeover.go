// Package takeover plans an agent's takeover of a node that kube-proxy programmed in IPVS mode, without a
// moment in which a Service stops answering.
//
// kube-proxy's IPVS mode keeps its ClusterIPs on the dummy device kube-ipvs0 and one virtual server per
// (ClusterIP, port, protocol), with masquerading real servers: the same kernel objects the agent keeps, on
// another device. The takeover therefore moves nothing that carries traffic:
//
//  1. Adopt (before the agent reads the kernel): every address on kube-ipvs0 that is a ClusterIP of a Service
//     the agent will serve is bound on the agent's own dummy device too. An address may sit on two devices;
//     the node keeps accepting it as long as one of them holds it. The agent's first read of the kernel then
//     finds kube-proxy's virtual servers on its own VIPs and adopts them as it adopts a previous agent's:
//     each Service's first sync edits the virtual server and its real servers in place (scheduler, weights,
//     endpoints that changed while nothing programmed them). Nothing is flushed or created again.
//  2. Leftovers (after the agent's first full sync, once every Service is programmed by the agent): the
//     device kube-ipvs0 (its addresses go with it; those the agent serves stay on the agent's device),
//     kube-proxy's iptables chains and the rules that jump to them, in iptables-nft's nftables tables and in
//     iptables-legacy's x_tables, and then its ipsets, which the chains reference and which cannot be
//     destroyed before them. Each step that fails stops the removal and leaves the rest in place: none of it
//     carries the agent's traffic, so the node keeps serving and the agent reports the error and tries again. Virtual servers on addresses the agent does not
//     serve (NodePorts on the node's own addresses, external IPs) are not the agent's and are left alone.
//
// Planning is pure (this file); the kernel is read and changed by the Kernel implementations at the edge.
package takeover

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/util/sets"
)

// KubeProxyInterface is the dummy device kube-proxy's IPVS mode binds ClusterIPs to (defaultDummyDevice in
// pkg/proxy/ipvs).
const KubeProxyInterface = "kube-ipvs0"

// The iptables tables kube-proxy's IPVS mode writes.
const (
	TableNAT    = "nat"
	TableFilter = "filter"
)

// Chain is an iptables chain in a table.
type Chain struct {
	Table string // TableNAT, TableFilter
	Name  string
}

func (c Chain) String() string { return c.Table + "/" + c.Name }

// KubeProxyChains are the chains kube-proxy v1.37.1's IPVS mode creates, in both IP families: its own list
// of what to remove (iptablesCleanupChains in pkg/proxy/ipvs/proxier.go). Chains named KUBE-* that kubelet
// owns (KUBE-FIREWALL, KUBE-KUBELET-CANARY, KUBE-IPTABLES-HINT) are not among them and are left alone.
var KubeProxyChains = []Chain{
	{TableNAT, "KUBE-SERVICES"},
	{TableNAT, "KUBE-POSTROUTING"},
	{TableNAT, "KUBE-NODE-PORT"},
	{TableNAT, "KUBE-LOAD-BALANCER"},
	{TableNAT, "KUBE-MARK-MASQ"},
	{TableFilter, "KUBE-FORWARD"},
	{TableFilter, "KUBE-NODE-PORT"},
	{TableFilter, "KUBE-PROXY-FIREWALL"},
	{TableFilter, "KUBE-SOURCE-RANGES-FIREWALL"},
	{TableFilter, "KUBE-IPVS-FILTER"},
	{TableFilter, "KUBE-IPVS-OUT-FILTER"},
}

// KubeProxySets are the ipsets kube-proxy v1.37.1's IPVS mode creates (ipsetInfo in pkg/proxy/ipvs/proxier.go);
// the IPv6 ones carry the prefix KubeProxySet6Prefix.
var KubeProxySets = []string{
	"KUBE-LOOP-BACK", "KUBE-CLUSTER-IP", "KUBE-EXTERNAL-IP", "KUBE-EXTERNAL-IP-LOCAL", "KUBE-LOAD-BALANCER",
	"KUBE-LOAD-BALANCER-FW", "KUBE-LOAD-BALANCER-LOCAL", "KUBE-LOAD-BALANCER-SOURCE-IP",
	"KUBE-LOAD-BALANCER-SOURCE-CIDR", "KUBE-NODE-PORT-TCP", "KUBE-NODE-PORT-LOCAL-TCP", "KUBE-NODE-PORT-UDP",
	"KUBE-NODE-PORT-LOCAL-UDP", "KUBE-NODE-PORT-SCTP-HASH", "KUBE-NODE-PORT-LOCAL-SCTP-HASH",
	"KUBE-HEALTH-CHECK-NODE-PORT", "KUBE-IPVS-IPS",
}

// kubeProxySet6 names kube-proxy's IPv6 ipset for an IPv4 one as NewIPSet in pkg/proxy/ipvs/ipset.go does:
// "KUBE-" becomes "KUBE-6-", cut to ipset's 31 characters.
func kubeProxySet6(name string) string {
	n := strings.Replace(name, "KUBE-", "KUBE-6-", 1)
	return n[:min(len(n), 31)]
}

// isKubeProxySet reports whether name is one of kube-proxy's ipsets, of either family.
func isKubeProxySet(name string) bool {
	return slices.ContainsFunc(KubeProxySets, func(s string) bool { return s == name || kubeProxySet6(s) == name })
}

// Family is an IP family of iptables (iptables or ip6tables).
type Family uint8

// The families.
const (
	IPv4 Family = 4
	IPv6 Family = 6
)

// Backend is where a ruleset's chains live: iptables-nft keeps them in nftables tables, iptables-legacy in
// the kernel's x_tables. kube-proxy writes with whichever `iptables` its image runs (its image's wrapper picks
// the one the node already uses), so a node may hold its chains in either, or in both after a switch.
type Backend uint8

// The backends.
const (
	// NFT is iptables-nft (Debian's and most distributions' default).
	NFT Backend = iota
	// Legacy is iptables-legacy.
	Legacy
)

// Ruleset is one family's chains in one backend: what one of iptables-nft, ip6tables-nft, iptables-legacy,
// ip6tables-legacy shows.
type Ruleset struct {
	Backend Backend
	Family  Family
}

// rulesets is every ruleset, in the order a plan visits them.
var rulesets = []Ruleset{{NFT, IPv4}, {NFT, IPv6}, {Legacy, IPv4}, {Legacy, IPv6}}

// command is the program that shows and edits the ruleset.
func (r Ruleset) command() string {
	c := "iptables"
	if r.Family == IPv6 {
		c = "ip6tables"
	}
	if r.Backend == Legacy {
		c += "-legacy"
	}
	return c
}

// Kind is what a Step does.
type Kind uint8

// The kinds of step, in the order a plan runs them.
const (
	// BindVIP binds a kube-proxy ClusterIP on the agent's device.
	BindVIP Kind = iota + 1
	// DeleteInterface deletes kube-ipvs0 and the addresses on it.
	DeleteInterface
	// DeleteJump deletes a rule of a chain that is not kube-proxy's (PREROUTING, INPUT...) jumping to one
	// of kube-proxy's chains: without it the chain cannot be deleted.
	DeleteJump
	// DeleteChain flushes and deletes one of kube-proxy's chains (all of them are flushed before any is
	// deleted: they jump to each other).
	DeleteChain
	// DestroySet destroys one of kube-proxy's ipsets, once no rule references it.
	DestroySet
)

// Step is one kernel change of a takeover.
type Step struct {
	Kind Kind
	// Addr is the VIP of BindVIP.
	Addr netip.Addr
	// Device is the device of BindVIP (the agent's) and DeleteInterface (kube-ipvs0).
	Device string
	// Ruleset, Chain and Jump are the chain of DeleteJump and DeleteChain; Jump is the rule DeleteJump
	// removes.
	Ruleset Ruleset
	Chain   Chain
	Jump    Jump
	// Set is the ipset of DestroySet.
	Set string
}

// String is the step as a command line: what an administrator would type to do it by hand.
func (s Step) String() string {
	switch s.Kind {
	case BindVIP:
		return fmt.Sprintf("ip addr add %s dev %s", netip.PrefixFrom(s.Addr, s.Addr.BitLen()), s.Device)
	case DeleteInterface:
		return "ip link del " + s.Device
	case DeleteJump:
		return fmt.Sprintf("%s -t %s -D %s -j %s", s.Ruleset.command(), s.Jump.From.Table, s.Jump.From.Name, s.Jump.To)
	case DeleteChain:
		return fmt.Sprintf("%s -t %s -F %s && %[1]s -t %[2]s -X %[3]s", s.Ruleset.command(), s.Chain.Table, s.Chain.Name)
	case DestroySet:
		return "ipset destroy " + s.Set
	}
	return fmt.Sprintf("step(%d)", s.Kind)
}

// Jump is a rule in a chain jumping to (or going to) another chain.
type Jump struct {
	From Chain
	To   string
	// Handle identifies the rule in the kernel: nftables' rule handle (NFT), the rule's number in its chain
	// as `iptables -D CHAIN N` counts (Legacy); 0 when unknown.
	Handle uint64
}

// PlanAdopt returns the VIPs to bind on the agent's device (agentDevice) before the agent first reads the
// kernel: every address on kube-ipvs0 (kubeProxyVIPs) that is a ClusterIP the agent serves (serve) and is not
// on the agent's device yet (agentVIPs), in address order. Addresses on kube-ipvs0 the agent does not serve
// stay where they are.
func PlanAdopt(kubeProxyVIPs, agentVIPs []netip.Addr, serve sets.Set[netip.Addr], agentDevice string) []Step {
	have := sets.New(agentVIPs...)
	addrs := slices.Clone(kubeProxyVIPs)
	slices.SortFunc(addrs, netip.Addr.Compare)
	var steps []Step
	for _, a := range slices.Compact(addrs) {
		if serve.Has(a) && !have.Has(a) {
			steps = append(steps, Step{Kind: BindVIP, Addr: a, Device: agentDevice})
		}
	}
	return steps
}

// Leftovers is what kube-proxy's IPVS mode may have left, as read from the kernel.
type Leftovers struct {
	// Interface says whether kube-ipvs0 exists.
	Interface bool
	// Chains are the chains present in each ruleset (any name: the plan picks kube-proxy's).
	Chains map[Ruleset][]Chain
	// Jumps are the rules, in chains that are not kube-proxy's, that jump to one of its chains, per ruleset.
	Jumps map[Ruleset][]Jump
	// Sets are the names of the ipsets present (any name).
	Sets []string
}

// PlanLeftovers returns the steps that remove kube-proxy's leftovers, in an order the kernel accepts: the
// device first, then per ruleset (iptables-nft's, then iptables-legacy's) the jumps into kube-proxy's
// chains, then its chains (each step flushes one; the edge flushes them all before deleting any), then its
// ipsets, which the chains' rules of either backend reference.
func PlanLeftovers(l Leftovers) []Step {
	var steps []Step
	if l.Interface {
		steps = append(steps, Step{Kind: DeleteInterface, Device: KubeProxyInterface})
	}
	for _, rs := range rulesets {
		var jumps []Step
		for _, j := range l.Jumps[rs] {
			if isKubeProxyChain(j.From) || !isKubeProxyChain(Chain{j.From.Table, j.To}) {
				continue
			}
			jumps = append(jumps, Step{Kind: DeleteJump, Ruleset: rs, Jump: j})
		}
		slices.SortFunc(jumps, func(a, b Step) int {
			return cmp.Or(strings.Compare(a.Jump.From.String(), b.Jump.From.String()), cmp.Compare(a.Jump.Handle, b.Jump.Handle),
				strings.Compare(a.Jump.To, b.Jump.To))
		})
		steps = append(steps, jumps...)
		present := sets.New(l.Chains[rs]...)
		for _, c := range KubeProxyChains {
			if present.Has(c) {
				steps = append(steps, Step{Kind: DeleteChain, Ruleset: rs, Chain: c})
			}
		}
	}
	names := slices.Clone(l.Sets)
	slices.Sort(names)
	for _, n := range slices.Compact(names) {
		if isKubeProxySet(n) {
			steps = append(steps, Step{Kind: DestroySet, Set: n})
		}
	}
	return steps
}

func isKubeProxyChain(c Chain) bool { return slices.Contains(KubeProxyChains, c) }

// Render prints steps one per line, as String does: the golden form of a plan.
func Render(steps []Step) string {
	var b strings.Builder
	for _, s := range steps {
		b.WriteString(s.String())
		b.WriteByte('\n')
	}
	return b.String()
}
