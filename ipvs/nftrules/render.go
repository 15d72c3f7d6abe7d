package nftrules

import (
	"bytes"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
)

// Render prints the table that a Table made with opts programs with Ensure(podCIDRs) followed by
// Update(elements, {}) (only the pod-matching options count), exactly as
// `nft list table inet ipvs-operator` (nftables 1.0.x) prints it: sets in creation order with sorted
// elements (two IPv4 addresses per line, nft's layout), then the chains and their rules. Invalid pod CIDRs
// and addresses, which Ensure and Update refuse, are left out.
func Render(podCIDRs []netip.Prefix, elements ipvs.RuleElements, opts ...Option) string {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	var valid []netip.Prefix
	for _, p := range podCIDRs {
		if _, _, err := splitRanges([]netip.Prefix{p}); err == nil {
			valid = append(valid, p)
		}
	}
	cidr4, cidr6, _ := splitRanges(valid)
	c4, c6 := validAddrs(elements.ClusterIPs)
	e4, e6 := validAddrs(elements.Endpoints)
	p4, p6 := validPorts(elements.Ports)

	var b strings.Builder
	b.WriteString("table inet " + TableName + " {\n")
	for _, d := range setDefs {
		var items []string
		switch d.name {
		case SetClusterIPs4:
			items = addrStrings(c4, false)
		case SetClusterIPs6:
			items = addrStrings(c6, false)
		case SetLoop4:
			items = addrStrings(e4, true)
		case SetLoop6:
			items = addrStrings(e6, true)
		case SetPodCIDRs4:
			items = rangeStrings(cidr4)
		case SetPodCIDRs6:
			items = rangeStrings(cidr6)
		case SetPorts4:
			items = portStrings(p4)
		case SetPorts6:
			items = portStrings(p6)
		}
		b.WriteString("\tset " + d.name + " {\n")
		b.WriteString("\t\ttype " + d.typ + "\n")
		if d.interval {
			b.WriteString("\t\tflags interval\n")
		}
		if len(items) > 0 {
			// nft puts two IPv4 addresses (or ranges) on a line, and one IPv6 address or one
			// concatenation (calculate_delim in its expression.c).
			perLine := 1
			if !d.v6 && !d.concat {
				perLine = 2
			}
			b.WriteString("\t\telements = { ")
			for i, it := range items {
				if i > 0 {
					if i%perLine == 0 {
						b.WriteString(",\n\t\t\t     ")
					} else {
						b.WriteString(", ")
					}
				}
				b.WriteString(it)
			}
			b.WriteString(" }\n")
		}
		b.WriteString("\t}\n\n")
	}
	rules := ruleDefs(o.pods)
	for i, c := range chainDefs {
		b.WriteString("\tchain " + c.name + " {\n")
		b.WriteString("\t\t" + c.header + "\n")
		for _, r := range rules {
			if r.chain == c.name {
				b.WriteString("\t\t" + r.text + "\n")
			}
		}
		b.WriteString("\t}\n")
		if i < len(chainDefs)-1 {
			b.WriteString("\n")
		}
	}
	b.WriteString("}\n")
	return b.String()
}

func validAddrs(addrs []netip.Addr) (v4, v6 []netip.Addr) {
	for _, a := range addrs {
		if one4, one6, err := splitAddrs([]netip.Addr{a}); err == nil {
			v4, v6 = append(v4, one4...), append(v6, one6...)
		}
	}
	v4, v6, _ = splitAddrs(append(v4, v6...)) // sort and deduplicate
	return v4, v6
}

func validPorts(keys []ipvs.ServiceKey) (v4, v6 []ipvs.ServiceKey) {
	var valid []ipvs.ServiceKey
	for _, k := range keys {
		if _, _, err := splitPorts([]ipvs.ServiceKey{k}); err == nil {
			valid = append(valid, k)
		}
	}
	v4, v6, _ = splitPorts(valid)
	return v4, v6
}

// portStrings prints (address . protocol . port) elements in the order nft lists them. nft sorts a
// concatenation's elements as one integer read from its key in host byte order, little-endian here, so the
// last key byte weighs most: the port's low byte, then its high byte, then the protocol, then the address
// from its last byte back.
func portStrings(keys []ipvs.ServiceKey) []string {
	type item struct {
		rev []byte
		s   string
	}
	items := make([]item, 0, len(keys))
	for i, key := range portKeys(keys) {
		slices.Reverse(key)
		k := keys[i]
		items = append(items, item{rev: key, s: k.Address.String() + " . " + strings.ToLower(k.Protocol.String()) + " . " + strconv.Itoa(int(k.Port))})
	}
	slices.SortFunc(items, func(a, b item) int { return bytes.Compare(a.rev, b.rev) })
	out := make([]string, 0, len(items))
	for _, it := range items {
		out = append(out, it.s)
	}
	return out
}

func addrStrings(addrs []netip.Addr, pair bool) []string {
	out := make([]string, 0, len(addrs))
	for _, a := range addrs {
		if pair {
			out = append(out, a.String()+" . "+a.String())
		} else {
			out = append(out, a.String())
		}
	}
	return out
}

func rangeStrings(rs []addrRange) []string {
	out := make([]string, 0, len(rs))
	for _, r := range slices.Clone(rs) {
		out = append(out, r.String())
	}
	return out
}
