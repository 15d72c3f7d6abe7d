package takeover

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
	"k8s.io/apimachinery/pkg/util/sets"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
)

// Firewall is what the takeover needs of iptables: kube-proxy's chains and the jumps into them.
type Firewall interface {
	// Read lists the chains of the nat and filter tables of family, and the rules of the other chains that
	// jump to one of kube-proxy's. Equivalent to: `iptables-save -t nat; iptables-save -t filter`.
	Read(family Family) ([]Chain, []Jump, error)
	// Delete removes the jump rules, then flushes every chain and deletes them, in one transaction.
	// Equivalent to: `iptables -t T -D FROM -j TO` for each jump, then `iptables -t T -F C` for each chain, then
	// `iptables -t T -X C` for each.
	Delete(family Family, jumps []Jump, chains []Chain) error
}

// IPSets is what the takeover needs of ipset.
type IPSets interface {
	// List returns the names of every ipset. Equivalent to: `ipset list -n`.
	List() ([]string, error)
	// Destroy destroys one; a missing one is not an error. Equivalent to: `ipset destroy NAME`.
	Destroy(name string) error
}

// Takeover carries out the two phases of a takeover (see the package documentation) on a node's kernel.
type Takeover struct {
	// Agent is the agent's dummy device; KubeProxy is kube-ipvs0 (ipvs.NewDummyVIPs(KubeProxyInterface)).
	Agent, KubeProxy ipvs.VIPs
	// AgentDevice names Agent's device in the steps.
	AgentDevice string
	// Firewall (iptables-nft's chains), Legacy (iptables-legacy's) and Sets may be nil: those leftovers are
	// then not looked for.
	Firewall Firewall
	Legacy   Firewall
	Sets     IPSets
}

// firewall is the Firewall of a backend, or nil.
func (t *Takeover) firewall(b Backend) Firewall {
	if b == Legacy {
		return t.Legacy
	}
	return t.Firewall
}

// Adopt binds on the agent's device every ClusterIP in serve that kube-proxy holds on kube-ipvs0, and returns
// what it did. A node without kube-ipvs0 is not an error: there is nothing to take over.
func (t *Takeover) Adopt(_ context.Context, serve sets.Set[netip.Addr]) ([]Step, error) {
	theirs, err := t.KubeProxy.List()
	if errors.Is(err, unix.ENODEV) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("takeover: reading %s: %w", KubeProxyInterface, err)
	}
	if err := t.Agent.EnsureInterface(); err != nil {
		return nil, fmt.Errorf("takeover: %w", err)
	}
	ours, err := t.Agent.List()
	if err != nil {
		return nil, fmt.Errorf("takeover: reading %s: %w", t.AgentDevice, err)
	}
	steps := PlanAdopt(theirs, ours, serve, t.AgentDevice)
	for i, s := range steps {
		if err := t.Agent.Bind(s.Addr); err != nil && !errors.Is(err, unix.EEXIST) {
			return steps[:i], fmt.Errorf("takeover: %s: %w", s, err)
		}
	}
	return steps, nil
}

// RemoveLeftovers removes what kube-proxy's IPVS mode left (kube-ipvs0, its iptables chains, its ipsets) and
// returns what it did. Call it only once the agent programs every Service it serves.
func (t *Takeover) RemoveLeftovers(_ context.Context) ([]Step, error) {
	l, err := t.read()
	if err != nil {
		return nil, err
	}
	steps := PlanLeftovers(l)
	var done []Step
	// The device, then per ruleset all the firewall steps at once (one transaction), then the sets.
	byRuleset := map[Ruleset][]Step{}
	for _, s := range steps {
		switch s.Kind {
		case DeleteInterface:
			if err := t.KubeProxy.DeleteInterface(); err != nil {
				return done, fmt.Errorf("takeover: %s: %w", s, err)
			}
			done = append(done, s)
		case DeleteJump, DeleteChain:
			byRuleset[s.Ruleset] = append(byRuleset[s.Ruleset], s)
		}
	}
	for _, rs := range rulesets {
		fs := byRuleset[rs]
		if len(fs) == 0 {
			continue
		}
		var jumps []Jump
		var chains []Chain
		for _, s := range fs {
			if s.Kind == DeleteJump {
				jumps = append(jumps, s.Jump)
			} else {
				chains = append(chains, s.Chain)
			}
		}
		if err := t.firewall(rs.Backend).Delete(rs.Family, jumps, chains); err != nil {
			return done, fmt.Errorf("takeover: removing kube-proxy's %s chains: %w", rs.command(), err)
		}
		done = append(done, fs...)
	}
	for _, s := range steps {
		if s.Kind != DestroySet {
			continue
		}
		if err := t.Sets.Destroy(s.Set); err != nil {
			return done, fmt.Errorf("takeover: %s: %w", s, err)
		}
		done = append(done, s)
	}
	return done, nil
}

// read reads the leftovers.
func (t *Takeover) read() (Leftovers, error) {
	l := Leftovers{Chains: map[Ruleset][]Chain{}, Jumps: map[Ruleset][]Jump{}}
	_, err := t.KubeProxy.List()
	switch {
	case errors.Is(err, unix.ENODEV):
	case err != nil:
		return l, fmt.Errorf("takeover: reading %s: %w", KubeProxyInterface, err)
	default:
		l.Interface = true
	}
	for _, rs := range rulesets {
		fw := t.firewall(rs.Backend)
		if fw == nil {
			continue
		}
		chains, jumps, err := fw.Read(rs.Family)
		if err != nil {
			return l, fmt.Errorf("takeover: reading %s chains: %w", rs.command(), err)
		}
		l.Chains[rs], l.Jumps[rs] = chains, jumps
	}
	if t.Sets != nil {
		names, err := t.Sets.List()
		if err != nil {
			return l, fmt.Errorf("takeover: listing ipsets: %w", err)
		}
		l.Sets = names
	}
	return l, nil
}
