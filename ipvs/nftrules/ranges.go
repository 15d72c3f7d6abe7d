package nftrules

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// addrRange is an inclusive address range, the unit of an interval set.
type addrRange struct{ from, to netip.Addr }

// splitRanges turns pod CIDRs into the smallest sorted list of disjoint ranges per family: the kernel
// refuses overlapping intervals, and adjacent ones are merged the way `nft` would list them anyway.
func splitRanges(prefixes []netip.Prefix) (v4, v6 []addrRange, err error) {
	for _, p := range prefixes {
		if !p.IsValid() || p.Addr().Is4In6() || p.Addr().Zone() != "" {
			return nil, nil, fmt.Errorf("nftrules: invalid pod CIDR %q: %w", p, unix.EINVAL)
		}
		p = p.Masked()
		r := addrRange{from: p.Addr(), to: lastAddr(p)}
		if r.from.Is4() {
			v4 = append(v4, r)
		} else {
			v6 = append(v6, r)
		}
	}
	return mergeRanges(v4), mergeRanges(v6), nil
}

func mergeRanges(rs []addrRange) []addrRange {
	slices.SortFunc(rs, func(a, b addrRange) int { return a.from.Compare(b.from) })
	var out []addrRange
	for _, r := range rs {
		if n := len(out); n > 0 {
			last := &out[n-1]
			if next := last.to.Next(); !next.IsValid() || r.from.Compare(next) <= 0 {
				if r.to.Compare(last.to) > 0 {
					last.to = r.to
				}
				continue
			}
		}
		out = append(out, r)
	}
	return out
}

// lastAddr is the highest address of a masked prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// intervalElements encodes ranges the way nft sends them: an interval-end element at the zero address
// when the first range does not start there, then start and end-plus-one of each range (no end element
// for a range that reaches the highest address).
func intervalElements(rs []addrRange) []nftables.SetElement {
	if len(rs) == 0 {
		return nil
	}
	var els []nftables.SetElement
	if first := rs[0].from; !first.IsUnspecified() {
		els = append(els, nftables.SetElement{Key: make([]byte, first.BitLen()/8), IntervalEnd: true})
	}
	for _, r := range rs {
		els = append(els, nftables.SetElement{Key: r.from.AsSlice()})
		if end := r.to.Next(); end.IsValid() {
			els = append(els, nftables.SetElement{Key: end.AsSlice(), IntervalEnd: true})
		}
	}
	return els
}

// String prints a range as nft lists it: an address, a prefix, or first-last.
func (r addrRange) String() string {
	if r.from == r.to {
		return r.from.String()
	}
	for bits := r.from.BitLen() - 1; bits >= 0; bits-- {
		p := netip.PrefixFrom(r.from, bits)
		if p.Masked().Addr() != r.from {
			break
		}
		if lastAddr(p) == r.to {
			return p.String()
		}
	}
	return r.from.String() + "-" + r.to.String()
}
