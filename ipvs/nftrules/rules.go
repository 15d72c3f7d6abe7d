// Package nftrules keeps the agent's own nftables table, `inet ipvs-operator`, which IPVS needs next to it:
//
//   - hairpin: a pod reaching itself through its Service is masqueraded, else it would answer itself from
//     its own address and drop the reply;
//   - non-pod sources (the node, host-network pods) reaching a ClusterIP are masqueraded, else a real server
//     on another node answers to the ClusterIP, which that node delivers to its own dummy interface;
//   - new connections to ClusterIPs from outside the cluster are refused: once IPVS, forwarding or masquerade
//     are on, the node would otherwise serve them; pod addresses forged from the node network are dropped;
//   - new connections to a ClusterIP on a (protocol, port) that has no virtual server are refused, from
//     anyone: IPVS hands such packets to the local stack, so a pod would reach whatever listens on the node
//     (kubelet, sshd, the agent's own port) at <any ClusterIP>:<port> (kubernetes#72236; kube-proxy's
//     KUBE-IPVS-FILTER does the same). ICMP echo to a ClusterIP is refused as well, as in kube-proxy's
//     modes: a ClusterIP is a Service's ports, not a host.
//
// Pods are told from other sources by address (the pod CIDR sets) or by the interface they arrive on
// (WithPodInterface, WithPodInterfacePrefix): kube-proxy's detect-local modes.
//
// It talks netlink through github.com/google/nftables (no `nft` binary), and Render prints the table as
// `nft list table inet ipvs-operator` does, so golden files and a live kernel can be compared.
package nftrules

import (
	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// TableName is the name of the agent's table, in the inet family.
const TableName = "ipvs-operator"

// Chain names.
const (
	ChainPostrouting = "nat-postrouting"
	ChainInput       = "filter-input"
)

// Set names.
const (
	SetClusterIPs4 = "clusterips4"
	SetClusterIPs6 = "clusterips6"
	SetPodCIDRs4   = "podcidrs4"
	SetPodCIDRs6   = "podcidrs6"
	SetLoop4       = "loop4"
	SetLoop6       = "loop6"
	// SetPorts4 and SetPorts6 hold (ClusterIP . protocol . port) for every virtual server.
	SetPorts4 = "clusterports4"
	SetPorts6 = "clusterports6"
)

// setDef describes one set. The order of setDefs is the order of creation, which is the order nft lists.
type setDef struct {
	name     string
	typ      string // nft's name of the key type
	key      nftables.SetDatatype
	interval bool
	concat   bool
	v6       bool
}

var setDefs = []setDef{
	{name: SetClusterIPs4, typ: "ipv4_addr", key: nftables.TypeIPAddr},
	{name: SetClusterIPs6, typ: "ipv6_addr", key: nftables.TypeIP6Addr, v6: true},
	{name: SetPodCIDRs4, typ: "ipv4_addr", key: nftables.TypeIPAddr, interval: true},
	{name: SetPodCIDRs6, typ: "ipv6_addr", key: nftables.TypeIP6Addr, interval: true, v6: true},
	{name: SetLoop4, typ: "ipv4_addr . ipv4_addr", key: nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeIPAddr), concat: true},
	{name: SetLoop6, typ: "ipv6_addr . ipv6_addr", key: nftables.MustConcatSetType(nftables.TypeIP6Addr, nftables.TypeIP6Addr), concat: true, v6: true},
	{name: SetPorts4, typ: "ipv4_addr . inet_proto . inet_service", key: nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService), concat: true},
	{name: SetPorts6, typ: "ipv6_addr . inet_proto . inet_service", key: nftables.MustConcatSetType(nftables.TypeIP6Addr, nftables.TypeInetProto, nftables.TypeInetService), concat: true, v6: true},
}

func (d setDef) set(t *nftables.Table) *nftables.Set {
	return &nftables.Set{
		Table:         t,
		Name:          d.name,
		KeyType:       d.key,
		Interval:      d.interval,
		Concatenation: d.concat,
		KeyByteOrder:  binaryutil.BigEndian, // addresses are in network order, as nft declares them
	}
}

// chainDef describes a base chain; header is nft's rendering of its type line.
type chainDef struct {
	name     string
	typ      nftables.ChainType
	hook     *nftables.ChainHook
	priority *nftables.ChainPriority
	header   string
}

var chainDefs = []chainDef{
	{
		name: ChainPostrouting, typ: nftables.ChainTypeNAT, hook: nftables.ChainHookPostrouting,
		priority: nftables.ChainPriorityNATSource,
		header:   "type nat hook postrouting priority srcnat; policy accept;",
	},
	{
		// Priority 0 runs before IPVS's LOCAL_IN hook (NF_IP_PRI_NAT_SRC - 2), so the guard sees the packet
		// while its destination is still the ClusterIP.
		name: ChainInput, typ: nftables.ChainTypeFilter, hook: nftables.ChainHookInput,
		priority: nftables.ChainPriorityFilter,
		header:   "type filter hook input priority filter; policy accept;",
	},
}

// ruleDef is one rule: its text as `nft list` prints it, and the expressions that are programmed, the
// very ones nft generates for that text (as `nft --debug=netlink` shows them), so that nft lists what was
// programmed with exactly this text. Each expression is an expr.Any or a rawExpr.
type ruleDef struct {
	chain string
	text  string
	exprs []any
}

// ipFamily holds what differs between the IPv4 and IPv6 rules.
type ipFamily struct {
	nfproto          byte
	kw               string // "ip" or "ip6"
	saddrOff, daddrO uint32 // network header offsets
	addrLen          uint32
	secondReg        uint32 // register of the second half of the (saddr . daddr) concatenation
	protoReg         uint32 // registers of l4proto and dport in the (daddr . l4proto . dport) concatenation
	portReg          uint32
	clusterIPs       string
	podCIDRs         string
	loop             string
	ports            string
	rejectCode       uint8
	rejectText       string
}

var families = []ipFamily{
	{
		nfproto: unix.NFPROTO_IPV4, kw: "ip", saddrOff: 12, daddrO: 16, addrLen: 4, secondReg: unix.NFT_REG32_01,
		clusterIPs: SetClusterIPs4, podCIDRs: SetPodCIDRs4, loop: SetLoop4,
		ports: SetPorts4, protoReg: unix.NFT_REG32_01, portReg: unix.NFT_REG32_02,
		rejectCode: 3, rejectText: "reject with icmp port-unreachable", // ICMP_PORT_UNREACH
	},
	{
		nfproto: unix.NFPROTO_IPV6, kw: "ip6", saddrOff: 8, daddrO: 24, addrLen: 16, secondReg: unix.NFT_REG_2,
		clusterIPs: SetClusterIPs6, podCIDRs: SetPodCIDRs6, loop: SetLoop6,
		ports: SetPorts6, protoReg: unix.NFT_REG_2, portReg: unix.NFT_REG32_05,
		rejectCode: 4, rejectText: "reject with icmpv6 port-unreachable", // ICMPV6_PORT_UNREACH
	},
}

// ruleDefs returns the rules in the order they are programmed and listed; pods says how pods are told
// from other sources.
func ruleDefs(pods podMatch) []ruleDef {
	out := make([]ruleDef, 0, 8*len(families)) // two rules per family, then the guard (two or three each) and the port filter (two)
	for _, f := range families {
		out = append(out, ruleDef{
			// Hairpin: after IPVS's DNAT a pod talking to itself has saddr == daddr == an endpoint.
			chain: ChainPostrouting,
			text:  f.kw + " saddr . " + f.kw + " daddr @" + f.loop + " masquerade",
			exprs: concat(nfproto(f.nfproto),
				&expr.Payload{DestRegister: unix.NFT_REG_1, Base: expr.PayloadBaseNetworkHeader, Offset: f.saddrOff, Len: f.addrLen},
				&expr.Payload{DestRegister: f.secondReg, Base: expr.PayloadBaseNetworkHeader, Offset: f.daddrO, Len: f.addrLen},
				&expr.Lookup{SourceRegister: unix.NFT_REG_1, SetName: f.loop},
				&expr.Masq{},
			),
		})
		notPod := pods.notPodSource(f)
		out = append(out, ruleDef{
			// The node itself and other non-pod sources: the conntrack entry IPVS made (vs.conntrack=1) still
			// has the ClusterIP as its original destination.
			chain: ChainPostrouting,
			text:  "ct original " + f.kw + " daddr @" + f.clusterIPs + " " + notPod.text + " masquerade",
			exprs: concat(
				[]any{
					ctOriginalDaddr(f.nfproto),
					&expr.Lookup{SourceRegister: unix.NFT_REG_1, SetName: f.clusterIPs},
				},
				notPod.exprs,
				&expr.Masq{},
			),
		})
	}
	for _, f := range families {
		// The guard. Pods on this node are told apart by the pod match (podmatch.go); the node itself and
		// host-network pods reach their local ClusterIP through lo; pods on other nodes never get here
		// with a ClusterIP destination, their own node's IPVS has rewritten it. Everything else is outside.
		for _, tail := range pods.guardTails(f) {
			out = append(out, ruleDef{
				chain: ChainInput,
				text:  "ct state new " + f.kw + " daddr @" + f.clusterIPs + ` iifname != "lo" ` + tail.text,
				exprs: concat(
					ctStateNew(),
					nfproto(f.nfproto),
					&expr.Payload{DestRegister: unix.NFT_REG_1, Base: expr.PayloadBaseNetworkHeader, Offset: f.daddrO, Len: f.addrLen},
					&expr.Lookup{SourceRegister: unix.NFT_REG_1, SetName: f.clusterIPs},
					&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: unix.NFT_REG_1},
					&expr.Cmp{Op: expr.CmpOpNeq, Register: unix.NFT_REG_1, Data: ifname("lo")},
					tail.exprs,
				),
			})
		}
	}
	for _, f := range families {
		// The port filter, for every source (pods, the node, lo): a ClusterIP accepts new connections only
		// where IPVS has a virtual server. `th dport` reads the two bytes at offset 2 of any transport
		// header; for a protocol without ports (ICMP) they are never in the set, whose elements are all TCP,
		// UDP or SCTP. Replies and established flows are not new, and ICMP errors about them are related, so
		// only new traffic is refused. TCP gets a reset: a client's kernel may drop an ICMP error that arrives
		// while connect() still holds its socket (a pod on the same node, IPv6 seen here), and then waits a
		// SYN retransmission (1 s) to fail, while a reset is queued and refuses at once.
		match := "ct state new " + f.kw + " daddr @" + f.clusterIPs + " " + f.kw + " daddr . meta l4proto . th dport != @" + f.ports
		matchExprs := concat(
			ctStateNew(),
			nfproto(f.nfproto),
			&expr.Payload{DestRegister: unix.NFT_REG_1, Base: expr.PayloadBaseNetworkHeader, Offset: f.daddrO, Len: f.addrLen},
			&expr.Lookup{SourceRegister: unix.NFT_REG_1, SetName: f.clusterIPs},
			&expr.Payload{DestRegister: unix.NFT_REG_1, Base: expr.PayloadBaseNetworkHeader, Offset: f.daddrO, Len: f.addrLen},
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: f.protoReg},
			&expr.Payload{DestRegister: f.portReg, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Lookup{SourceRegister: unix.NFT_REG_1, SetName: f.ports, Invert: true},
		)
		out = append(out, ruleDef{
			chain: ChainInput,
			text:  match + " meta l4proto tcp reject with tcp reset",
			exprs: concat(matchExprs,
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: unix.NFT_REG_1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: unix.NFT_REG_1, Data: []byte{unix.IPPROTO_TCP}},
				&expr.Reject{Type: unix.NFT_REJECT_TCP_RST},
			),
		}, ruleDef{
			chain: ChainInput,
			text:  match + " " + f.rejectText,
			exprs: concat(matchExprs, &expr.Reject{Type: unix.NFT_REJECT_ICMP_UNREACH, Code: f.rejectCode}),
		})
	}
	return out
}

// ctStateNew is `ct state new`.
func ctStateNew() []any {
	return []any{
		&expr.Ct{Register: unix.NFT_REG_1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: unix.NFT_REG_1, DestRegister: unix.NFT_REG_1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitNEW), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: unix.NFT_REG_1, Data: make([]byte, 4)},
	}
}

// nfproto is `meta nfproto ipv4|ipv6`, the dependency nft adds (and hides) before ip/ip6 matches in an
// inet table.
func nfproto(p byte) []any {
	return []any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: unix.NFT_REG_1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: unix.NFT_REG_1, Data: []byte{p}},
	}
}

// concat builds an expression list from lists and single expressions.
func concat(parts ...any) []any {
	var out []any
	for _, p := range parts {
		if l, ok := p.([]any); ok {
			out = append(out, l...)
		} else {
			out = append(out, p)
		}
	}
	return out
}

// ifname pads an interface name to IFNAMSIZ, as nft compares exact names.
func ifname(n string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, n)
	return b
}
