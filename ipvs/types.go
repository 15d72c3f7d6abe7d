// Package ipvs is a small library over the kernel's IPVS load balancer and the dummy interface that holds
// the virtual IPs. Identity types (what a virtual or real server IS) are kept apart from observed data
// (weights, connection counts), so a diff can compare identities with ==.
package ipvs

import (
	"fmt"
	"net/netip"
	"time"
)

// Protocol is an IPVS virtual server protocol.
type Protocol uint8

// Protocols IPVS balances; values are the IP protocol numbers.
const (
	TCP  Protocol = 6
	UDP  Protocol = 17
	SCTP Protocol = 132
)

// String returns the protocol as Kubernetes spells it.
func (p Protocol) String() string {
	switch p {
	case TCP:
		return "TCP"
	case UDP:
		return "UDP"
	case SCTP:
		return "SCTP"
	}
	return fmt.Sprintf("proto(%d)", uint8(p))
}

// flag is ipvsadm's option for the protocol: -t, -u or --sctp-service.
func (p Protocol) flag() string {
	switch p {
	case UDP:
		return "-u"
	case SCTP:
		return "--sctp-service"
	}
	return "-t"
}

// ServiceKey is the identity of a virtual server: (VIP, port, protocol).
type ServiceKey struct {
	Address  netip.Addr
	Port     uint16
	Protocol Protocol
}

// String renders the key as ipvsadm does: "-t 10.96.0.10:80" or "-u [fd00::1]:53".
func (k ServiceKey) String() string {
	return k.Protocol.flag() + " " + netip.AddrPortFrom(k.Address, k.Port).String()
}

// Service is the configurable part of a virtual server.
type Service struct {
	ServiceKey
	// Scheduler is the ipvsadm scheduler name (rr, lc, ...).
	Scheduler string
	// Persistence is the ClientIP affinity timeout; 0 means no persistence.
	Persistence time.Duration
}

// DestinationKey is the identity of a real server within a virtual server.
type DestinationKey struct {
	Address netip.Addr
	Port    uint16
}

// String renders the key as "10.244.1.5:8080" or "[fd00::5]:8080".
func (k DestinationKey) String() string { return netip.AddrPortFrom(k.Address, k.Port).String() }

// Destination is the configurable part of a real server. Forwarding is always masquerading (NAT).
type Destination struct {
	DestinationKey
	Weight int
}

// DestinationStats is what the kernel reports about a real server's connections.
type DestinationStats struct {
	ActiveConnections   int
	InactiveConnections int
}

// ObservedDestination is a real server as read from the kernel.
type ObservedDestination struct {
	Destination
	DestinationStats
}

// VirtualServer is a virtual server and its real servers: the unit the desired model and the kernel cache
// are made of.
type VirtualServer struct {
	Service
	Destinations []Destination
}
