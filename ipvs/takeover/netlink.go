package takeover

import (
	"errors"
	"fmt"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// NFTablesFirewall reads and removes kube-proxy's chains as iptables-nft made them: nftables tables "nat" and
// "filter" of the ip and ip6 families, whose rules hold xtables matches. Chains made by iptables-legacy live
// in the kernel's x_tables, which nftables does not see: LegacyFirewall removes those.
type NFTablesFirewall struct{}

var _ Firewall = NFTablesFirewall{}

func nftFamily(f Family) nftables.TableFamily {
	if f == IPv6 {
		return nftables.TableFamilyIPv6
	}
	return nftables.TableFamilyIPv4
}

var firewallTables = []string{TableNAT, TableFilter}

// Read implements Firewall. Equivalent to: `iptables-nft-save -t nat; iptables-nft-save -t filter`.
func (NFTablesFirewall) Read(family Family) ([]Chain, []Jump, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, nil, err
	}
	all, err := c.ListChainsOfTableFamily(nftFamily(family))
	if err != nil {
		return nil, nil, err
	}
	var chains []Chain
	var jumps []Jump
	for _, ch := range all {
		if !slices.Contains(firewallTables, ch.Table.Name) {
			continue
		}
		chain := Chain{Table: ch.Table.Name, Name: ch.Name}
		chains = append(chains, chain)
		if isKubeProxyChain(chain) {
			continue // its rules go with it
		}
		rules, err := c.GetRules(ch.Table, ch)
		if err != nil {
			return nil, nil, fmt.Errorf("nft list chain %s %s %s: %w", familyName(family), ch.Table.Name, ch.Name, err)
		}
		for _, r := range rules {
			for _, e := range r.Exprs {
				v, ok := e.(*expr.Verdict)
				if ok && (v.Kind == expr.VerdictJump || v.Kind == expr.VerdictGoto) &&
					isKubeProxyChain(Chain{Table: ch.Table.Name, Name: v.Chain}) {
					jumps = append(jumps, Jump{From: chain, To: v.Chain, Handle: r.Handle})
				}
			}
		}
	}
	return chains, jumps, nil
}

// Delete implements Firewall: one nftables transaction.
func (NFTablesFirewall) Delete(family Family, jumps []Jump, chains []Chain) error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	fam := nftFamily(family)
	table := func(name string) *nftables.Table { return &nftables.Table{Name: name, Family: fam} }
	for _, j := range jumps {
		if err := c.DelRule(&nftables.Rule{Table: table(j.From.Table), Chain: &nftables.Chain{Name: j.From.Name, Table: table(j.From.Table)},
			Handle: j.Handle}); err != nil {
			return err
		}
	}
	for _, ch := range chains {
		c.FlushChain(&nftables.Chain{Name: ch.Name, Table: table(ch.Table)})
	}
	for _, ch := range chains {
		c.DelChain(&nftables.Chain{Name: ch.Name, Table: table(ch.Table)})
	}
	return c.Flush()
}

func familyName(f Family) string {
	if f == IPv6 {
		return "ip6"
	}
	return "ip"
}

// NetlinkIPSets lists and destroys ipsets over netlink (what the ipset program does).
type NetlinkIPSets struct{}

var _ IPSets = NetlinkIPSets{}

// List implements IPSets. A kernel without ip_set has no set.
func (NetlinkIPSets) List() ([]string, error) {
	all, err := netlink.IpsetListAll()
	if errors.Is(err, unix.EPROTONOSUPPORT) || errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(all))
	for _, s := range all {
		names = append(names, s.SetName)
	}
	return names, nil
}

// Destroy implements IPSets.
func (NetlinkIPSets) Destroy(name string) error {
	if err := netlink.IpsetDestroy(name); err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	return nil
}
