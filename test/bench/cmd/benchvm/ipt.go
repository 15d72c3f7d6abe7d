package main

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
	"golang.org/x/sys/unix"
)

// kube-proxy's iptables mode (pkg/proxy/iptables in Kubernetes v1.37) writes, in the nat table, one rule per
// ClusterIP port in KUBE-SERVICES (`-m tcp -p tcp -d VIP --dport PORT -j KUBE-SVC-<hash>`), one rule per
// endpoint in that service chain (`-m statistic ... -j KUBE-SEP-<hash>`, with a comment naming the endpoint
// only below 1,000 endpoints in all: the harness's runs have more, so it cannot be relied on), and in each
// endpoint chain `-m tcp -p tcp -j DNAT --to-destination IP:PORT`. The endpoint chain's name is a hash of
// the Service port and the endpoint, so a given KUBE-SEP chain always DNATs to the same address.
//
// With iptables-nft (the lab's `iptables`, Debian's default) those rules are nftables rules in table `ip nat`:
// the address, protocol and port matches become payload and meta expressions, the jumps verdicts, the
// statistic match and the DNAT target xtables extensions run by nft_compat, whose data the kernel hands back
// as the iptables binary wrote it. All of it is read over netlink, chain by chain: a flip costs one dump of
// the service chain (a few rules); `iptables-save -t nat` would fetch and print every rule each time.
const (
	iptNATTable    = "nat"
	iptServices    = "KUBE-SERVICES"
	iptSvcPrefix   = "KUBE-SVC-"
	iptSepPrefix   = "KUBE-SEP-"
	iptDNATTarget  = "DNAT"
	ipDaddrOffset  = 16 // of the IPv4 header
	tcpDportOffset = 2  // of the TCP header
)

// iptView reads kube-proxy's iptables-mode rules, as iptables-nft wrote them, in the network namespace benchvm
// runs in.
type iptView struct {
	c     *nftables.Conn
	table *nftables.Table
	// svcChains caches the service chain of each ClusterIP port seen in KUBE-SERVICES (a hash of the
	// Service port: it never changes while the Service exists).
	svcChains map[iptServiceKey]string
	// sepTargets caches the DNAT target of each endpoint chain read (fixed by its name, see above).
	sepTargets map[string]netip.AddrPort
}

type iptServiceKey struct {
	addr  netip.Addr
	proto uint8
	port  uint16
}

func newIPTView() (*iptView, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, err
	}
	return &iptView{c: c, table: &nftables.Table{Name: iptNATTable, Family: nftables.TableFamilyIPv4},
		svcChains: map[iptServiceKey]string{}, sepTargets: map[string]netip.AddrPort{}}, nil
}

// rules dumps one chain of the nat table; a missing table or chain is no rule (google/nftables formats the
// kernel's ENOENT into its error text, hence the table check first).
//
// Equivalent to: `iptables -t nat -S CHAIN`.
func (v *iptView) rules(chain string) ([]*nftables.Rule, error) {
	rules, err := v.c.GetRules(v.table, &nftables.Chain{Name: chain, Table: v.table})
	if err == nil {
		return rules, nil
	}
	tables, terr := v.c.ListTablesOfFamily(v.table.Family)
	if terr != nil {
		return nil, terr
	}
	if !slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == v.table.Name }) {
		return nil, nil
	}
	chains, cerr := v.c.ListChainsOfTableFamily(v.table.Family)
	if cerr != nil {
		return nil, cerr
	}
	if !slices.ContainsFunc(chains, func(c *nftables.Chain) bool { return c.Table.Name == v.table.Name && c.Name == chain }) {
		return nil, nil
	}
	return nil, err
}

// services reads KUBE-SERVICES: each ClusterIP port and its service chain. It refreshes the cache.
func (v *iptView) services() (map[iptServiceKey]string, error) {
	rules, err := v.rules(iptServices)
	if err != nil {
		return nil, err
	}
	out := map[iptServiceKey]string{}
	for _, r := range rules {
		k, chain, ok := iptServiceRule(r.Exprs)
		if ok {
			out[k] = chain
			v.svcChains[k] = chain
		}
	}
	return out, nil
}

// endpointChains reads a service chain's jumps to its endpoint chains.
func (v *iptView) endpointChains(svcChain string) ([]string, error) {
	rules, err := v.rules(svcChain)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, r := range rules {
		for _, c := range iptJumps(r.Exprs) {
			if strings.HasPrefix(c, iptSepPrefix) {
				out = append(out, c)
			}
		}
	}
	return out, nil
}

// endpoint is the DNAT target of an endpoint chain, read once per chain.
func (v *iptView) endpoint(sepChain string) (netip.AddrPort, error) {
	if ap, ok := v.sepTargets[sepChain]; ok {
		return ap, nil
	}
	rules, err := v.rules(sepChain)
	if err != nil {
		return netip.AddrPort{}, err
	}
	for _, r := range rules {
		ap, ok, err := iptDNAT(r.Exprs)
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("%s: %w", sepChain, err)
		}
		if ok {
			v.sepTargets[sepChain] = ap
			return ap, nil
		}
	}
	return netip.AddrPort{}, fmt.Errorf("%s: no DNAT rule", sepChain)
}

// iptServiceRule decodes a KUBE-SERVICES rule: destination address, protocol and destination port compared
// for equality, and a jump to a service chain. Rules of another shape (the jump to KUBE-NODEPORTS, external
// IPs' masquerade marks) are not.
func iptServiceRule(es []expr.Any) (iptServiceKey, string, bool) {
	var k iptServiceKey
	loaded := iptLoads{}
	chain := ""
	for _, e := range es {
		loaded.note(e)
		switch e := e.(type) {
		case *expr.Cmp:
			if e.Op == expr.CmpOpEq {
				k.compare(loaded[e.Register], e.Data)
			}
		case *expr.Match:
			// An iptables that does not translate `-m tcp --dport` keeps it an xtables match.
			if t, ok := e.Info.(*xt.Tcp); ok && e.Name == "tcp" && t.DstPorts[0] == t.DstPorts[1] && t.InvFlags == 0 {
				k.port = t.DstPorts[0]
				k.proto = cmp.Or(k.proto, unix.IPPROTO_TCP)
			}
		case *expr.Verdict:
			if (e.Kind == expr.VerdictJump || e.Kind == expr.VerdictGoto) && strings.HasPrefix(e.Chain, iptSvcPrefix) {
				chain = e.Chain
			}
		}
	}
	return k, chain, chain != "" && k.addr.IsValid() && k.port != 0 && k.proto != 0
}

// iptLoads tracks which packet field each register holds ("daddr", "dport", "l4proto").
type iptLoads map[uint32]string

// note records what e loads into a register; anything else written to a register forgets it.
func (l iptLoads) note(e expr.Any) {
	switch e := e.(type) {
	case *expr.Payload:
		switch {
		case e.Base == expr.PayloadBaseNetworkHeader && e.Offset == ipDaddrOffset && e.Len == 4:
			l[e.DestRegister] = "daddr"
		case e.Base == expr.PayloadBaseTransportHeader && e.Offset == tcpDportOffset && e.Len == 2:
			l[e.DestRegister] = "dport"
		default:
			delete(l, e.DestRegister)
		}
	case *expr.Meta:
		if e.Key == expr.MetaKeyL4PROTO && !e.SourceRegister {
			l[e.Register] = "l4proto"
		} else {
			delete(l, e.Register)
		}
	case *expr.Bitwise:
		delete(l, e.DestRegister) // a prefix shorter than /32: not a ClusterIP
	}
}

// compare takes the value a rule compares field with.
func (k *iptServiceKey) compare(field string, data []byte) {
	switch {
	case field == "daddr" && len(data) == 4:
		k.addr = netip.AddrFrom4([4]byte(data))
	case field == "dport" && len(data) == 2:
		k.port = binary.BigEndian.Uint16(data)
	case field == "l4proto" && len(data) == 1:
		k.proto = data[0]
	}
}

// iptJumps lists the chains a rule jumps or goes to.
func iptJumps(es []expr.Any) []string {
	var out []string
	for _, e := range es {
		if v, ok := e.(*expr.Verdict); ok && (v.Kind == expr.VerdictJump || v.Kind == expr.VerdictGoto) {
			out = append(out, v.Chain)
		}
	}
	return out
}

// iptDNAT decodes a rule's DNAT: the xtables DNAT target iptables-nft writes (revisions 0-2 carry one
// address and port range), or a native nftables DNAT of literals.
func iptDNAT(es []expr.Any) (netip.AddrPort, bool, error) {
	for _, e := range es {
		t, ok := e.(*expr.Target)
		if !ok || t.Name != iptDNATTarget {
			continue
		}
		var ip []byte
		var port uint16
		switch info := t.Info.(type) {
		case *xt.NatRange2:
			ip, port = info.MinIP.To4(), info.MinPort
		case *xt.NatRange:
			ip, port = info.MinIP.To4(), info.MinPort
		case *xt.NatIPv4MultiRangeCompat:
			if len(*info) == 0 {
				return netip.AddrPort{}, false, fmt.Errorf("a DNAT target without a range")
			}
			ip, port = (*info)[0].MinIP.To4(), (*info)[0].MinPort
		default:
			return netip.AddrPort{}, false, fmt.Errorf("a DNAT target of revision %d with data %T", t.Rev, t.Info)
		}
		if len(ip) != 4 {
			return netip.AddrPort{}, false, fmt.Errorf("a DNAT target to a non-IPv4 address %v", ip)
		}
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(ip)), port), true, nil
	}
	_, direct, err := dnatTargets(es)
	if err != nil || len(direct) == 0 {
		return netip.AddrPort{}, false, err
	}
	return direct[0], true, nil
}

// activeEndpoints is the DNAT targets of a ClusterIP port's service chain; no service chain (not written
// yet, or no endpoint) is none.
func (v *iptView) activeEndpoints(k iptServiceKey) ([]netip.AddrPort, error) {
	chain, ok := v.svcChains[k]
	if !ok {
		if _, err := v.services(); err != nil {
			return nil, err
		}
		if chain, ok = v.svcChains[k]; !ok {
			return nil, nil
		}
	}
	seps, err := v.endpointChains(chain)
	if err != nil {
		return nil, err
	}
	out := make([]netip.AddrPort, 0, len(seps))
	for _, s := range seps {
		ap, err := v.endpoint(s)
		if err != nil {
			return nil, err
		}
		out = append(out, ap)
	}
	return out, nil
}

// iptFlip: DST:DPORT is (ACTIVE=1) or is not (ACTIVE=0) the DNAT target of an endpoint chain that
// VIP:PORT/TCP's service chain jumps to. Per check, one dump of the service chain (KUBE-SERVICES only the
// first time, the endpoint chains once each).
func (w *watcher) iptFlip(f []string) (bool, string, error) {
	if len(f) != 5 {
		return false, "", fmt.Errorf("iptflip wants VIP PORT DST DPORT ACTIVE, got %q", f)
	}
	vip, err := netip.ParseAddr(f[0])
	if err != nil {
		return false, "", err
	}
	port, err := strconv.ParseUint(f[1], 10, 16)
	if err != nil {
		return false, "", err
	}
	dst, err := netip.ParseAddrPort(f[2] + ":" + f[3])
	if err != nil {
		return false, "", err
	}
	want := f[4] == "1"
	eps, err := w.ipt.activeEndpoints(iptServiceKey{addr: vip, proto: unix.IPPROTO_TCP, port: uint16(port)})
	if err != nil {
		return false, "", nil //nolint:nilerr // a chain replaced between two reads; look again
	}
	return slices.Contains(eps, dst) == want, "", nil
}

// iptFull: at least N TCP ClusterIP ports in PREFIX in KUBE-SERVICES, each service chain with >= M jumps to
// endpoint chains (kube-proxy writes a service chain and its endpoint chains in one iptables-restore, one
// nftables transaction); each service chain seen complete is not read again.
func (w *watcher) iptFull(f []string, complete map[string]bool) (bool, string, error) {
	if len(f) != 3 {
		return false, "", fmt.Errorf("iptfull wants PREFIX N M, got %q", f)
	}
	prefix, err := netip.ParsePrefix(f[0])
	if err != nil {
		return false, "", err
	}
	n, _ := strconv.Atoi(f[1])
	m, _ := strconv.Atoi(f[2])
	svcs, err := w.ipt.services()
	if err != nil {
		return false, "", err
	}
	var mine []string
	for k, chain := range svcs {
		if k.proto == unix.IPPROTO_TCP && prefix.Contains(k.addr) {
			mine = append(mine, chain)
		}
	}
	if len(mine) < n {
		w.progress("iptfull: %d of %d ClusterIP rules of %s (%d in all) in %s", len(mine), n, iptServices, len(svcs), prefix)
		return false, "", nil
	}
	slices.Sort(mine)
	for _, chain := range mine {
		if complete[chain] {
			continue
		}
		seps, err := w.ipt.endpointChains(chain)
		if err != nil || len(seps) < m {
			w.progress("iptfull: %s has %d of %d endpoint chains (%v); %d Services complete", chain, len(seps), m, err, len(complete))
			return false, "", nil //nolint:nilerr // being replaced; look again
		}
		complete[chain] = true
	}
	return true, fmt.Sprintf("services=%d", len(mine)), nil
}
