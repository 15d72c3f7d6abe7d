package host

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
)

// ProbeService is the throwaway virtual server Probe creates: an address from TEST-NET-2 (RFC 5737), which
// no real network uses, and a high port. It never receives traffic.
var ProbeService = ipvs.Service{
	ServiceKey: ipvs.ServiceKey{Address: netip.MustParseAddr("198.51.100.1"), Port: 65432, Protocol: ipvs.TCP},
	Scheduler:  "rr",
}

// Probe proves that IPVS works through i: it adds ProbeService, reads the table back, requires the
// virtual server to be there and deletes it. A nil error from the kernel proves nothing: on a kernel
// without IPVS, moby/ipvs sends its requests to generic netlink family 0, which acknowledges everything
// and lists nothing. Failures wrap ipvs.ErrNotSupported, except a failing cleanup.
func Probe(i ipvs.Interface) error {
	// ErrExists: left over by a probe that died before its cleanup; it proves as much as a fresh one.
	if err := i.AddService(ProbeService); err != nil && !errors.Is(err, ipvs.ErrExists) {
		return fmt.Errorf("%w: cannot add the probe virtual server: %w", ipvs.ErrNotSupported, err)
	}
	svcs, err := i.Services()
	if err != nil {
		return fmt.Errorf("%w: cannot list virtual servers: %w", ipvs.ErrNotSupported, err)
	}
	found := false
	for _, s := range svcs {
		if s.ServiceKey == ProbeService.ServiceKey {
			found = true
			break
		}
	}
	if !found {
		return fmt.Errorf("%w: the kernel accepted virtual server %s but does not list it (no ip_vs module, or it was loaded after the IPVS handle was opened)", ipvs.ErrNotSupported, ProbeService.ServiceKey)
	}
	if err := i.DeleteService(ProbeService.ServiceKey); err != nil {
		return fmt.Errorf("host: remove the probe virtual server %s: %w", ProbeService.ServiceKey, err)
	}
	return nil
}
