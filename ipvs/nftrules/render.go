package nftrules

import (
	"net/netip"
	"slices"
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
