package ipvs

import (
	"errors"
	"net/netip"
)

// Interface is what the agent needs of the kernel's IPVS table. The netlink implementation talks to the
// kernel; package fake keeps the table in memory for unit tests.
//
// Implementations return errors wrapping the kernel's errno (compare with errors.Is(err, unix.EEXIST)) or
// the sentinel errors below.
type Interface interface {
	// Services lists every virtual server in the table, owned by us or not.
	// Equivalent to: `ipvsadm -Ln` (services only).
	Services() ([]Service, error)
	// Service reads one virtual server, without its real servers: one round trip whatever the size of the
	// table, which makes it the drift canary's probe. A missing one is ErrNotFound.
	// Equivalent to: `ipvsadm -Ln -t VIP:PORT` (the service line only).
	Service(ServiceKey) (Service, error)
	// AddService creates a virtual server. Equivalent to: `ipvsadm -A -t VIP:PORT -s SCHED [-p SECONDS]`.
	AddService(Service) error
	// UpdateService changes a virtual server's scheduler or persistence in place, keeping its real servers
	// and connections. Equivalent to: `ipvsadm -E -t VIP:PORT -s SCHED [-p SECONDS]`.
	UpdateService(Service) error
	// DeleteService removes a virtual server and its real servers. Equivalent to: `ipvsadm -D -t VIP:PORT`.
	DeleteService(ServiceKey) error
	// Destinations lists a virtual server's real servers with their connection counts.
	// Equivalent to: `ipvsadm -Ln -t VIP:PORT`.
	Destinations(ServiceKey) ([]ObservedDestination, error)
	// AddDestination adds a masquerading real server.
	// Equivalent to: `ipvsadm -a -t VIP:PORT -r IP:PORT -m -w WEIGHT`.
	AddDestination(ServiceKey, Destination) error
	// UpdateDestination changes a real server's weight. Equivalent to: `ipvsadm -e -t VIP:PORT -r IP:PORT -m -w WEIGHT`.
	UpdateDestination(ServiceKey, Destination) error
	// DeleteDestination removes a real server. Equivalent to: `ipvsadm -d -t VIP:PORT -r IP:PORT`.
	DeleteDestination(ServiceKey, DestinationKey) error
}

// DestinationDumper is implemented by an Interface that can list the real servers of every virtual server
// in one read: the audit's read of the whole table then costs one dump instead of one Destinations call per
// virtual server, which at 10,000 virtual servers was most of an audit's time in the lab.
type DestinationDumper interface {
	// AllDestinations returns the real servers of every virtual server (firewall-mark ones excepted), by
	// key. The read is not atomic: a virtual server created or deleted meanwhile may be missing, or may
	// hide another from the read, so read a virtual server it does not report with Destinations.
	// Equivalent to: `cat /proc/net/ip_vs`.
	AllDestinations() (map[ServiceKey][]ObservedDestination, error)
}

// Batcher is implemented by an Interface that can create virtual and real servers several per system call.
// A cold start creates every virtual server with its real servers in a row: a request and an
// acknowledgement each, about 60,000 round trips at 10,000 Services of 5 endpoints.
type Batcher interface {
	// Batch makes the additions in order, each as AddService or AddDestination would, and returns each
	// one's error (nil, or what that call would have returned). Only AddService and AddDestination are
	// batched; any other Op is an error.
	// Equivalent to: `ipvsadm -R` of the corresponding `-A` and `-a` lines.
	Batch([]Addition) []error
}

// Addition is one change of a Batch: a virtual server (Op OpAddService, Service) or a real server of one
// (Op OpAddDestination, Service's key and Destination).
type Addition struct {
	Op          string
	Service     Service
	Destination Destination
}

// VIPs binds virtual IPs to the agent's dummy interface, so the node accepts packets for them and IPVS
// sees them on its LOCAL_IN hook.
type VIPs interface {
	// EnsureInterface creates the dummy interface if needed and sets it up.
	// Equivalent to: `ip link add NAME type dummy && ip link set NAME up`.
	EnsureInterface() error
	// InterfaceUp reports whether the interface exists and is administratively up: one link lookup, not a
	// dump. A device that is down has lost its local routes, so its VIPs no longer reach IPVS.
	// Equivalent to: `ip link show NAME`.
	InterfaceUp() (bool, error)
	// List returns the addresses bound to the interface.
	// Equivalent to: `ip addr show dev NAME`.
	List() ([]netip.Addr, error)
	// Bind adds an address as a /32 or /128. Equivalent to: `ip addr add VIP/32 dev NAME`.
	Bind(netip.Addr) error
	// Unbind removes an address. Equivalent to: `ip addr del VIP/32 dev NAME`.
	Unbind(netip.Addr) error
	// DeleteInterface removes the interface and every address on it. Equivalent to: `ip link del NAME`.
	DeleteInterface() error
}

// VIPBatcher is implemented by VIPs that can bind many addresses at once, several per system call. A cold
// start binds every ClusterIP of the cluster in a row: one request and one acknowledgement per address
// was the larger part of their cost apart from the kernel's own work.
type VIPBatcher interface {
	// BindAll binds each address as Bind does and returns one error per address, in order (nil: bound, or
	// already bound). Equivalent to: `ip -batch` of `addr add VIP/32 dev NAME` lines.
	BindAll([]netip.Addr) []error
}

var (
	// ErrNotSupported means the kernel has no working IPVS: the probe could not create and read back a
	// virtual server.
	ErrNotSupported = errors.New("ipvs: the kernel's IPVS is not available")
	// ErrNotFound means the virtual or real server does not exist.
	ErrNotFound = errors.New("ipvs: not found")
	// ErrExists means the virtual or real server already exists.
	ErrExists = errors.New("ipvs: already exists")
	// ErrSchedulerNotFound means the kernel has no such scheduler (its ip_vs_<name> module is not loaded):
	// a problem of the Services that ask for it, not of the node.
	ErrSchedulerNotFound = errors.New("ipvs: scheduler not found")
)

// Rules is the agent's own nftables table (inet family, named "ipvs-operator"): masquerade for hairpin and
// for non-pod sources reaching ClusterIPs, a guard refusing new connections to ClusterIPs from outside, and
// a filter refusing new connections to a ClusterIP on any (protocol, port) that has no virtual server.
type Rules interface {
	// Ensure creates or repairs the table, chains, rules and sets, and sets the pod CIDRs. Idempotent.
	Ensure(podCIDRs []netip.Prefix) error
	// Update adds and removes set elements incrementally (no full rewrite).
	Update(add, remove RuleElements) error
	// Elements reads back the current set elements (used by the periodic audit).
	Elements() (RuleElements, error)
	// Exists reports whether the table is in the kernel: one lookup by name, not a listing of its contents.
	// Equivalent to: `nft list table inet ipvs-operator >/dev/null`.
	Exists() (bool, error)
	// Delete removes the whole table. Equivalent to: `nft delete table inet ipvs-operator`.
	Delete() error
}

// RulesGeneration is implemented by Rules that can tell cheaply (one small request, no read of the sets)
// that nothing but their own Updates changed the kernel since the start of their last Elements, so a
// caller that tracks those updates knows the elements without reading them (nftrules.Table: the ruleset
// generation). False whenever anything else may have changed, also something unrelated.
type RulesGeneration interface {
	UnchangedSinceElements() (bool, error)
}

// RuleElements are the per-Service members of the rule sets.
type RuleElements struct {
	ClusterIPs []netip.Addr // IPv4 and IPv6 VIPs
	Endpoints  []netip.Addr // endpoint IPs; hairpin masquerade matches (endpoint . endpoint) pairs
	// Ports are the virtual servers' keys: a new connection to a ClusterIP is accepted only on one of
	// them. Without this filter IPVS hands a packet that matches no virtual server to the local stack, and a
	// pod reaches whatever listens on the node (kubelet, sshd, the agent) at <any ClusterIP>:<port>.
	Ports []ServiceKey
}
