package plan

import (
	"errors"
	"fmt"
	"net/netip"

	"k8s.io/apimachinery/pkg/util/sets"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
)

// ErrInvalidDesired is matched (errors.Is) by every error Validate returns.
var ErrInvalidDesired = errors.New("plan: invalid desired state")

// Validate checks the contract a Desired must keep before Compute may diff it: VIPs valid and listed once;
// every virtual server on one of the VIPs, listed once, with protocol TCP, UDP or SCTP; every real server a
// valid address of its virtual server's family, listed once, with a weight >= 0.
//
// It lives here, next to the type it describes, because both sides of the contract import this package:
// the producer (the Kubernetes translation, whose fuzz test asserts its output passes) and the consumer
// (the sync engine, which refuses a Desired that fails it). The order Desired documents (sorted VIPs,
// servers and real servers) is not checked: Compute is correct in any order, only its op order follows it.
func (d Desired) Validate() error {
	vips := sets.New[netip.Addr]()
	for _, v := range d.VIPs {
		if !validAddr(v) || vips.Has(v) {
			return fmt.Errorf("%w: VIP %s invalid or listed twice", ErrInvalidDesired, v)
		}
		vips.Insert(v)
	}
	servers := sets.New[ipvs.ServiceKey]()
	for _, sv := range d.Servers {
		switch {
		case !vips.Has(sv.Address):
			return fmt.Errorf("%w: virtual server %s is not on one of the VIPs", ErrInvalidDesired, sv.ServiceKey)
		case servers.Has(sv.ServiceKey):
			return fmt.Errorf("%w: virtual server %s listed twice", ErrInvalidDesired, sv.ServiceKey)
		case sv.Protocol != ipvs.TCP && sv.Protocol != ipvs.UDP && sv.Protocol != ipvs.SCTP:
			return fmt.Errorf("%w: virtual server %s has protocol %s", ErrInvalidDesired, sv.ServiceKey, sv.Protocol)
		}
		servers.Insert(sv.ServiceKey)
		dests := sets.New[ipvs.DestinationKey]()
		for _, dst := range sv.Destinations {
			if !validAddr(dst.Address) || dst.Address.Is4() != sv.Address.Is4() || dst.Weight < 0 || dests.Has(dst.DestinationKey) {
				return fmt.Errorf("%w: real server %s of %s invalid or listed twice", ErrInvalidDesired, dst.DestinationKey, sv.ServiceKey)
			}
			dests.Insert(dst.DestinationKey)
		}
	}
	return nil
}

// validAddr: IPVS and the dummy interface take plain addresses only (no zone, no IPv4-mapped IPv6).
func validAddr(a netip.Addr) bool { return a.IsValid() && !a.Is4In6() && a.Zone() == "" }
