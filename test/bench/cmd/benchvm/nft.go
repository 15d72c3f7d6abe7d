package main

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// kube-proxy's nftables mode (pkg/proxy/nftables in Kubernetes v1.37) keeps, in table `ip kube-proxy`, a
// verdict map `service-ips` from (ClusterIP . protocol . port) to `goto service-<hash>-<ns>/<name>/<proto>/<port>`,
// and in that chain one rule that DNATs to its endpoints: `dnat ip addr . port to numgen random mod N map
// { 0 : IP . PORT, ... }` (an anonymous map), or `dnat to IP:PORT` for a single endpoint (Services with
// session affinity jump to per-endpoint chains instead; the harness writes none). Reading these over netlink
// costs one map dump and, per Service, one rule dump of a single chain and one anonymous-map dump: `nft list`
// would fetch the whole ruleset each time (~20 s at 10,000 Services in the lab VM).
const (
	kubeProxyTable = "kube-proxy"
	serviceIPsMap  = "service-ips"
)

// nftView reads kube-proxy's nftables state in the network namespace benchvm runs in.
type nftView struct {
	c     *nftables.Conn
	table *nftables.Table
}

func newNFTView() (*nftView, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, err
	}
	return &nftView{c: c, table: &nftables.Table{Name: kubeProxyTable, Family: nftables.TableFamilyIPv4}}, nil
}

// serviceIP is an element of service-ips: a ClusterIP, protocol and port, and the chain it jumps to.
type serviceIP struct {
	addr  netip.Addr
	proto uint8
	port  uint16
	chain string
}

// services dumps service-ips. A missing table (kube-proxy not started yet) is an empty answer; kube-proxy
// creates the map in the same transaction as the table.
//
// Equivalent to: `nft list map ip kube-proxy service-ips`.
func (v *nftView) services() ([]serviceIP, error) {
	// google/nftables formats the kernel's ENOENT into its error text (no errors.Is): ask for the table first.
	tables, err := v.c.ListTablesOfFamily(v.table.Family)
	if err != nil {
		return nil, err
	}
	if !slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == v.table.Name }) {
		return nil, nil
	}
	elems, err := v.c.GetSetElements(&nftables.Set{Table: v.table, Name: serviceIPsMap})
	if err != nil {
		return nil, err
	}
	out := make([]serviceIP, 0, len(elems))
	for _, e := range elems {
		s, err := decodeServiceIP(e.Key, e.Val)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// endpoints reads the DNAT targets of a service chain. An error may mean that the chain or its anonymous
// map was replaced between the two reads: the caller looks again.
//
// Equivalent to: `nft list chain ip kube-proxy CHAIN`.
func (v *nftView) endpoints(chain string) ([]netip.AddrPort, error) {
	rules, err := v.c.GetRules(v.table, &nftables.Chain{Name: chain, Table: v.table})
	if err != nil {
		return nil, err
	}
	var out []netip.AddrPort
	for _, r := range rules {
		anon, direct, err := dnatTargets(r.Exprs)
		if err != nil {
			return nil, err
		}
		out = append(out, direct...)
		if anon == "" {
			continue
		}
		elems, err := v.c.GetSetElements(&nftables.Set{Table: v.table, Name: anon})
		if err != nil {
			return nil, err
		}
		for _, e := range elems {
			ap, err := decodeAddrPort(e.Val)
			if err != nil {
				return nil, err
			}
			out = append(out, ap)
		}
	}
	return out, nil
}

// decodeServiceIP decodes a service-ips element: the key is the concatenation ipv4_addr . inet_proto .
// inet_service, each field padded to 4 bytes; the value a verdict (NFTA_DATA_VERDICT: code, chain).
func decodeServiceIP(key, val []byte) (serviceIP, error) {
	if len(key) != 12 {
		return serviceIP{}, fmt.Errorf("service-ips key of %d bytes, want 12", len(key))
	}
	s := serviceIP{addr: netip.AddrFrom4([4]byte(key[0:4])), proto: key[4], port: binary.BigEndian.Uint16(key[8:10])}
	ad, err := netlink.NewAttributeDecoder(val)
	if err != nil {
		return serviceIP{}, fmt.Errorf("service-ips verdict: %w", err)
	}
	ad.ByteOrder = binary.BigEndian
	for ad.Next() {
		if ad.Type() == unix.NFTA_VERDICT_CHAIN {
			s.chain = strings.TrimRight(ad.String(), "\x00")
		}
	}
	if err := ad.Err(); err != nil {
		return serviceIP{}, fmt.Errorf("service-ips verdict: %w", err)
	}
	if s.chain == "" {
		return serviceIP{}, fmt.Errorf("service-ips element %s: no chain in its verdict", s.addr)
	}
	return s, nil
}

// decodeAddrPort decodes an ipv4_addr . inet_service value (4 + 4 bytes, the port padded).
func decodeAddrPort(b []byte) (netip.AddrPort, error) {
	if len(b) != 8 {
		return netip.AddrPort{}, fmt.Errorf("endpoint value of %d bytes, want 8", len(b))
	}
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[0:4])), binary.BigEndian.Uint16(b[4:6])), nil
}

// dnatTargets finds a rule's DNAT: the anonymous map its address and port come from (a lookup into a map
// feeding the NAT's registers), or its literal address and port (immediates loaded into them).
func dnatTargets(es []expr.Any) (anonMap string, direct []netip.AddrPort, err error) {
	var nat *expr.NAT
	for _, e := range es {
		if n, ok := e.(*expr.NAT); ok && n.Type == expr.NATTypeDestNAT {
			nat = n
		}
	}
	if nat == nil {
		return "", nil, nil
	}
	imm := map[uint32][]byte{}
	for _, e := range es {
		switch e := e.(type) {
		case *expr.Lookup:
			// In a DNAT rule, a map lookup is where the address and port come from.
			if e.IsDestRegSet {
				return e.SetName, nil, nil
			}
		case *expr.Immediate:
			imm[reg32(e.Register)] = e.Data
		}
	}
	a, p := imm[reg32(nat.RegAddrMin)], imm[reg32(nat.RegProtoMin)]
	if len(a) != 4 || len(p) < 2 {
		return "", nil, fmt.Errorf("a DNAT whose address (%d bytes) or port (%d bytes) is not an IPv4 literal", len(a), len(p))
	}
	return "", []netip.AddrPort{netip.AddrPortFrom(netip.AddrFrom4([4]byte(a)), binary.BigEndian.Uint16(p[0:2]))}, nil
}

// nftFlip: DST:DPORT is (ACTIVE=1) or is not (ACTIVE=0) a DNAT target of VIP:PORT/TCP. A Service with no
// endpoint left has no service-ips element, which counts as not active.
func (w *watcher) nftFlip(f []string) (bool, string, error) {
	if len(f) != 5 {
		return false, "", fmt.Errorf("nftflip wants VIP PORT DST DPORT ACTIVE, got %q", f)
	}
	vip, err := netip.ParseAddr(f[0])
	if err != nil {
		return false, "", err
	}
	port, _ := strconv.Atoi(f[1])
	dst, err := netip.ParseAddrPort(f[2] + ":" + f[3])
	if err != nil {
		return false, "", err
	}
	want := f[4] == "1"
	svcs, err := w.nft.services()
	if err != nil {
		return false, "", err
	}
	chain := ""
	for _, s := range svcs {
		if s.addr == vip && int(s.port) == port && s.proto == unix.IPPROTO_TCP {
			chain = s.chain
		}
	}
	if chain == "" {
		return !want, "", nil
	}
	eps, err := w.nft.endpoints(chain)
	if err != nil {
		return false, "", nil //nolint:nilerr // replaced between two reads; look again
	}
	active := false
	for _, ep := range eps {
		if ep == dst {
			active = true
		}
	}
	return active == want, "", nil
}

// nftFull: at least N TCP Services in PREFIX, each with >= M endpoints; like full, each Service seen
// complete is not read again.
func (w *watcher) nftFull(f []string, complete map[string]bool) (bool, string, error) {
	if len(f) != 3 {
		return false, "", fmt.Errorf("nftfull wants PREFIX N M, got %q", f)
	}
	prefix, err := netip.ParsePrefix(f[0])
	if err != nil {
		return false, "", err
	}
	n, _ := strconv.Atoi(f[1])
	m, _ := strconv.Atoi(f[2])
	svcs, err := w.nft.services()
	if err != nil {
		return false, "", err
	}
	var mine []serviceIP
	for _, s := range svcs {
		if s.proto == unix.IPPROTO_TCP && prefix.Contains(s.addr) {
			mine = append(mine, s)
		}
	}
	if len(mine) < n {
		w.progress("nftfull: %d of %d elements of service-ips (%d in all) in %s", len(mine), n, len(svcs), prefix)
		return false, "", nil
	}
	for _, s := range mine {
		if complete[s.chain] {
			continue
		}
		eps, err := w.nft.endpoints(s.chain)
		if err != nil || len(eps) < m {
			w.progress("nftfull: %s has %d of %d endpoints (%v); %d Services complete", s.chain, len(eps), m, err, len(complete))
			return false, "", nil //nolint:nilerr // being replaced; look again
		}
		complete[s.chain] = true
	}
	return true, fmt.Sprintf("services=%d", len(mine)), nil
}

// progress logs what a waiting command sees when it changes: why a run waits is in the watcher's log.
func (w *watcher) progress(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if msg != w.lastProgress {
		w.lastProgress = msg
		fmt.Fprintln(os.Stderr, time.Now().Format(time.TimeOnly), msg)
	}
}

// reg32 names a register by its first 32-bit slot: nft may address the same storage as NFT_REG_1..4 (16
// bytes each) or as NFT_REG32_00..15.
func reg32(r uint32) uint32 {
	if r >= unix.NFT_REG32_00 {
		return r - unix.NFT_REG32_00
	}
	return (r - unix.NFT_REG_1) * 4
}
