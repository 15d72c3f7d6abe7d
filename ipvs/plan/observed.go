package plan

import (
	"net/netip"
	"time"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
)

// Observed is what the kernel holds for one Service, as far as the caller knows (usually from its cache,
// not from a fresh dump).
type Observed struct {
	// VIPs are the Service's addresses currently bound to the dummy interface.
	VIPs []netip.Addr
	// Servers are the virtual servers the Service owns in the kernel, in any order.
	Servers []ObservedServer
}

// ObservedServer is a virtual server as the kernel holds it.
type ObservedServer struct {
	ipvs.Service
	Destinations []ObservedDestination
}

// ObservedDestination is a real server as the kernel holds it, plus when the agent started draining it.
type ObservedDestination struct {
	ipvs.ObservedDestination
	// DrainingSince is when the agent set the real server's weight to 0 because its endpoint went away.
	// Zero means not draining, or not known (a weight-0 real server adopted after a restart): the plan then
	// counts the drain from now, so a restart can only lengthen a drain, never cut it short.
	DrainingSince time.Time
}
