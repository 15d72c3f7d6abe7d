// Package plan computes, for one Kubernetes Service, the ordered kernel operations that take what the kernel
// holds for that Service to what it should hold. It is pure: no I/O, time comes in as an argument.
package plan

import (
	"net/netip"
	"time"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
)

// Desired is the IPVS state one Kubernetes Service should have on this node: its virtual IPs, and a
// virtual server with its real servers per (ClusterIP, port, protocol).
//
// It lives here rather than next to the Kubernetes translation (controllers/agent/desired, which aliases it
// as State) so that the ipvs packages stay free of Kubernetes API types.
type Desired struct {
	// VIPs are the Service's ClusterIPs, sorted. Each is bound to the agent's dummy interface.
	VIPs []netip.Addr
	// Servers are sorted by (address, port, protocol); each one's address is one of VIPs.
	Servers []ipvs.VirtualServer
	// DrainTimeout is how long a TCP real server whose endpoint went away stays at weight 0 while its
	// connections drain before it is deleted; 0 deletes it at once. It applies to every TCP virtual server
	// of the Service (one policy governs a whole Service). UDP and SCTP real servers are always deleted at
	// once, see DrainTimeoutFor.
	DrainTimeout time.Duration
}

// IsZero reports whether nothing is desired: the Service is gone, out of scope, or has no ClusterIP.
func (d Desired) IsZero() bool { return len(d.VIPs) == 0 && len(d.Servers) == 0 }

// DrainTimeoutFor is the drain timeout of a virtual server with protocol p. Only TCP drains: a UDP flow or
// an SCTP association kept on a weight-0 real server stays stuck on it (weight 0 does not move existing
// flows), so for them deleting at once, with net.ipv4.vs.expire_nodest_conn=1, is the graceful choice.
func (d Desired) DrainTimeoutFor(p ipvs.Protocol) time.Duration {
	if p != ipvs.TCP || d.DrainTimeout < 0 {
		return 0
	}
	return d.DrainTimeout
}
