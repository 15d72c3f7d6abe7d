package fake

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
)

// Rules is an in-memory ipvs.Rules. Like the nftables one, Update and Elements fail with ENOENT until
// Ensure has created the table, removing an absent element is not an error, and Ensure keeps the elements
// of an existing table. The zero value is usable.
type Rules struct {
	counters
	exists     bool
	podCIDRs   []netip.Prefix
	clusterIPs map[netip.Addr]bool
	endpoints  map[netip.Addr]bool
	ports      map[ipvs.ServiceKey]bool
}

var _ ipvs.Rules = (*Rules)(nil)

// NewRules returns a Rules whose table does not exist yet.
func NewRules() *Rules { return &Rules{} }

// TableExists reports whether Ensure has run since the last Delete.
func (r *Rules) TableExists() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.exists
}

// PodCIDRs returns the pod CIDRs of the last Ensure, masked and sorted.
func (r *Rules) PodCIDRs() []netip.Prefix {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.podCIDRs)
}

// Ensure creates the table if needed and replaces the pod CIDRs.
func (r *Rules) Ensure(podCIDRs []netip.Prefix) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.rec.op(Ensure); err != nil {
		return err
	}
	cidrs := make([]netip.Prefix, 0, len(podCIDRs))
	for _, p := range podCIDRs {
		if !p.IsValid() {
			return fmt.Errorf("nftrules: invalid pod CIDR %q: %w", p, unix.EINVAL)
		}
		cidrs = append(cidrs, p.Masked())
	}
	slices.SortFunc(cidrs, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	r.podCIDRs = slices.Compact(cidrs)
	if !r.exists {
		r.exists, r.clusterIPs, r.endpoints, r.ports = true, map[netip.Addr]bool{}, map[netip.Addr]bool{}, map[ipvs.ServiceKey]bool{}
	}
	return nil
}

// Update removes, then adds, set elements.
func (r *Rules) Update(add, remove ipvs.RuleElements) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.rec.op(Update); err != nil {
		return err
	}
	if !r.exists {
		return noTable("update")
	}
	for _, e := range [][]netip.Addr{add.ClusterIPs, add.Endpoints, remove.ClusterIPs, remove.Endpoints} {
		for _, a := range e {
			if !a.IsValid() || a.Is4In6() || a.Zone() != "" {
				return fmt.Errorf("nftrules: invalid address %q: %w", a, unix.EINVAL)
			}
		}
	}
	for _, ks := range [][]ipvs.ServiceKey{add.Ports, remove.Ports} {
		for _, k := range ks {
			a := k.Address
			if !a.IsValid() || a.Is4In6() || a.Zone() != "" || (k.Protocol != ipvs.TCP && k.Protocol != ipvs.UDP && k.Protocol != ipvs.SCTP) {
				return fmt.Errorf("nftrules: invalid virtual server %q: %w", k, unix.EINVAL)
			}
		}
	}
	for _, k := range remove.Ports {
		delete(r.ports, k)
	}
	for _, k := range add.Ports {
		r.ports[k] = true
	}
	for _, a := range remove.ClusterIPs {
		delete(r.clusterIPs, a)
	}
	for _, a := range remove.Endpoints {
		delete(r.endpoints, a)
	}
	for _, a := range add.ClusterIPs {
		r.clusterIPs[a] = true
	}
	for _, a := range add.Endpoints {
		r.endpoints[a] = true
	}
	return nil
}

// Elements returns the set elements, each list sorted.
func (r *Rules) Elements() (ipvs.RuleElements, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.rec.op(Elements); err != nil {
		return ipvs.RuleElements{}, err
	}
	if !r.exists {
		return ipvs.RuleElements{}, noTable("list")
	}
	ports := slices.Collect(maps.Keys(r.ports))
	slices.SortFunc(ports, func(a, b ipvs.ServiceKey) int {
		return cmp.Or(a.Address.Compare(b.Address), cmp.Compare(a.Port, b.Port), cmp.Compare(a.Protocol, b.Protocol))
	})
	return ipvs.RuleElements{ClusterIPs: sortedKeys(r.clusterIPs), Endpoints: sortedKeys(r.endpoints), Ports: ports}, nil
}

// Exists reports whether the table exists (counted, unlike TableExists).
func (r *Rules) Exists() (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.rec.op(Exists); err != nil {
		return false, err
	}
	return r.exists, nil
}

// Delete removes the table; an absent table is not an error.
func (r *Rules) Delete() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.rec.op(Delete); err != nil {
		return err
	}
	r.exists, r.podCIDRs, r.clusterIPs, r.endpoints, r.ports = false, nil, nil, nil, nil
	return nil
}

func sortedKeys(m map[netip.Addr]bool) []netip.Addr {
	out := slices.Collect(maps.Keys(m))
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

func noTable(what string) error {
	return fmt.Errorf("nftrules: %s: table inet ipvs-operator does not exist (Ensure first): %w", what, unix.ENOENT)
}
