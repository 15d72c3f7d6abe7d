package nftrules

import (
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// podMatch is how the rules tell this node's pods from every other source (the agent's
// --detect-local-mode). The zero value matches pods by source address, with the pod CIDR sets that Ensure
// fills (kube-proxy's ClusterCIDR and NodeCIDR modes); with an interface, by the interface a packet
// arrived on (BridgeInterface, or InterfaceNamePrefix when prefix is set).
type podMatch struct {
	iface  string
	prefix bool
}

// WithPodInterface makes the rules take packets arriving on the interface name as the pods' (a bridge
// such as cbr0 or cni0) instead of matching the pod CIDR sets, which the rules then do not use.
func WithPodInterface(name string) Option {
	return func(o *options) { o.pods = podMatch{iface: name} }
}

// WithPodInterfacePrefix makes the rules take packets arriving on any interface whose name starts with
// prefix as the pods' (one host veth per pod: cali, eni, veth) instead of matching the pod CIDR sets.
func WithPodInterfacePrefix(prefix string) Option {
	return func(o *options) { o.pods = podMatch{iface: prefix, prefix: true} }
}

// ruleTail is the end of a rule: its text and expressions.
type ruleTail struct {
	text  string
	exprs []any
}

// notPodSource matches, in the nat postrouting chain, a connection whose source is not a pod: the node
// itself or a host-network pod (outside sources never get that far, the guard refused them).
func (m podMatch) notPodSource(f ipFamily) ruleTail {
	if m.iface == "" {
		return ruleTail{
			text: f.kw + " saddr != @" + f.podCIDRs,
			exprs: concat(nfproto(f.nfproto),
				&expr.Payload{DestRegister: unix.NFT_REG_1, Base: expr.PayloadBaseNetworkHeader, Offset: f.saddrOff, Len: f.addrLen},
				&expr.Lookup{SourceRegister: unix.NFT_REG_1, SetName: f.podCIDRs, Invert: true},
			),
		}
	}
	// The input interface is unknown in postrouting (the kernel passes none to that hook, and IPVS sends
	// its packets out through LOCAL_OUT), so kube-proxy's `iifname != X` cannot be used here. What is not a
	// pod but reached IPVS through the guard originated on this node, and a packet made on this node has one
	// of the node's own addresses as its source: a pod's address never is.
	return ruleTail{
		text: "fib saddr type local",
		exprs: []any{
			&expr.Fib{Register: unix.NFT_REG_1, FlagSADDR: true, ResultADDRTYPE: true},
			&expr.Cmp{Op: expr.CmpOpEq, Register: unix.NFT_REG_1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
		},
	}
}

// refusals turns a match into the two rules that refuse what it matches, as the port filter does: TCP with
// a reset, the rest with an ICMP port unreachable. A client's kernel drops an ICMP error that arrives while
// connect() still holds its socket, which happens when the whole round trip runs within that system call
// (veths deliver in the sender's softirq: the outside host's IPv6 connections timed out here, 3 of 3, after
// 1 s SYN retransmissions); a reset is queued to the socket's backlog and refuses at once.
func refusals(f ipFamily, text string, exprs []any) []ruleTail {
	return []ruleTail{
		{
			text: text + " meta l4proto tcp reject with tcp reset",
			exprs: concat(exprs,
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: unix.NFT_REG_1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: unix.NFT_REG_1, Data: []byte{unix.IPPROTO_TCP}},
				&expr.Reject{Type: unix.NFT_REJECT_TCP_RST},
			),
		},
		{
			text:  text + " " + f.rejectText,
			exprs: concat(exprs, &expr.Reject{Type: unix.NFT_REJECT_ICMP_UNREACH, Code: f.rejectCode}),
		},
	}
}

// guardTails are the ends of the guard's rules, after "ct state new, to a ClusterIP, not from lo": each
// rule refuses (or drops) what is not from a pod.
func (m podMatch) guardTails(f ipFamily) []ruleTail {
	if m.iface != "" {
		// The interface is the proof: a packet from the node network never arrives on a pod interface.
		name := m.iface
		data := ifname(name)
		if m.prefix {
			name += "*"
			data = []byte(m.iface) // nft compares only the prefix's bytes
		}
		return refusals(f, `iifname != "`+name+`"`, []any{
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: unix.NFT_REG_1},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: unix.NFT_REG_1, Data: data},
		})
	}
	return append(refusals(f, f.kw+" saddr != @"+f.podCIDRs, []any{
		&expr.Payload{DestRegister: unix.NFT_REG_1, Base: expr.PayloadBaseNetworkHeader, Offset: f.saddrOff, Len: f.addrLen},
		&expr.Lookup{SourceRegister: unix.NFT_REG_1, SetName: f.podCIDRs, Invert: true},
	}),
		ruleTail{
			// Anti-spoofing: a pod address is only a pod if the packet came in where this node sends
			// the replies to that address (a strict reverse-path check, rp_filter=1 for this rule only;
			// the node-wide sysctl is left alone, CNIs set it as they need). A host on the node network
			// that forges this node's pod addresses arrives on the uplink while the route back leads to
			// the pod's bridge or veth, and is dropped: no reply, least of all to the pod it
			// impersonates. With NodeCIDR only this node's pod CIDRs pass at all. With ClusterCIDR, on a
			// node network that routes other nodes' pod ranges directly over the uplink, such a forged
			// address passes this check; it stays blind, the replies going to the other node.
			text: "fib saddr . iif oif missing drop",
			exprs: []any{
				&expr.Fib{Register: unix.NFT_REG_1, FlagSADDR: true, FlagIIF: true, ResultOIF: true, FlagPRESENT: true},
				&expr.Cmp{Op: expr.CmpOpEq, Register: unix.NFT_REG_1, Data: make([]byte, 4)},
				&expr.Verdict{Kind: expr.VerdictDrop},
			},
		},
	)
}
