package kubelet

import (
	"encoding/binary"
	"fmt"
	"net"
	"sync"
)

// IPAM hands out pod IPs from the node's pod CIDR: the network address and the gateway (.1) and the broadcast
// address are never given. Allocations live in memory only; after a restart they are rebuilt from the pods'
// reported IPs (Reserve). Released addresses are reused last (round robin), so a new pod rarely inherits a
// just-deleted pod's address while conntrack and IPVS still remember it.
type IPAM struct {
	mu      sync.Mutex
	first   uint32 // first assignable address
	last    uint32 // last assignable address
	next    uint32 // where the round-robin search starts
	byAddr  map[uint32]string
	byOwner map[string]uint32
}

// NewIPAM returns an allocator for cidr (IPv4).
func NewIPAM(cidr *net.IPNet) (*IPAM, error) {
	ip4 := cidr.IP.To4()
	ones, bits := cidr.Mask.Size()
	if ip4 == nil || bits != 32 || bits-ones < 2 {
		return nil, fmt.Errorf("pod CIDR %s: need an IPv4 network of at least 4 addresses", cidr)
	}
	base := binary.BigEndian.Uint32(ip4.Mask(cidr.Mask))
	size := uint32(1) << (bits - ones)
	return &IPAM{
		first:   base + 2,
		last:    base + size - 2,
		next:    base + 2,
		byAddr:  map[uint32]string{},
		byOwner: map[string]uint32{},
	}, nil
}

func toUint32(ip net.IP) (uint32, bool) {
	ip4 := ip.To4()
	if ip4 == nil {
		return 0, false
	}
	return binary.BigEndian.Uint32(ip4), true
}

func toIP(n uint32) net.IP {
	ip := make(net.IP, 4)
	binary.BigEndian.PutUint32(ip, n)
	return ip
}

// Reserve records that owner already has ip (rebuilding state from pod status). It fails if the address is
// outside the range or held by someone else; an owner that already holds another address keeps that one.
func (a *IPAM) Reserve(owner string, ip net.IP) error {
	n, ok := toUint32(ip)
	if !ok || n < a.first || n > a.last {
		return fmt.Errorf("address %s is outside the assignable range", ip)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if cur, ok := a.byOwner[owner]; ok {
		if cur == n {
			return nil
		}
		return fmt.Errorf("%s already holds %s", owner, toIP(cur))
	}
	if holder, taken := a.byAddr[n]; taken {
		return fmt.Errorf("address %s is held by %s", ip, holder)
	}
	a.byAddr[n] = owner
	a.byOwner[owner] = n
	return nil
}

// Allocate returns owner's address, assigning a free one if it has none.
func (a *IPAM) Allocate(owner string) (net.IP, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if n, ok := a.byOwner[owner]; ok {
		return toIP(n), nil
	}
	span := a.last - a.first + 1
	for i := uint32(0); i < span; i++ {
		n := a.first + (a.next-a.first+i)%span
		if _, taken := a.byAddr[n]; taken {
			continue
		}
		a.byAddr[n] = owner
		a.byOwner[owner] = n
		a.next = n + 1
		if a.next > a.last {
			a.next = a.first
		}
		return toIP(n), nil
	}
	return nil, fmt.Errorf("no free pod address (%d in use)", len(a.byAddr))
}

// hostBits is the number of host bits of cidr.
func hostBits(cidr *net.IPNet) int {
	ones, bits := cidr.Mask.Size()
	return bits - ones
}

// IPv6Pair is a pod's IPv6 address on a dual-stack node: the host part of its IPv4 address in cidr4, in
// cidr6 (10.244.1.5 in 10.244.1.0/24 is fd00:10:244:1::5 in fd00:10:244:1::/64). Deriving it keeps one
// allocator (IPAM) for both families and makes a pod's two addresses easy to tell as one pod's.
func IPv6Pair(ip4 net.IP, cidr4, cidr6 *net.IPNet) net.IP {
	n, ok := toUint32(ip4)
	if !ok {
		return nil
	}
	host := n &^ mustUint32(net.IP(cidr4.Mask))
	ip := make(net.IP, net.IPv6len)
	copy(ip, cidr6.IP.Mask(cidr6.Mask).To16())
	for i := 0; i < 4; i++ {
		ip[15-i] |= byte(host >> (8 * i))
	}
	return ip
}

// Release frees owner's address, if any.
func (a *IPAM) Release(owner string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if n, ok := a.byOwner[owner]; ok {
		delete(a.byOwner, owner)
		delete(a.byAddr, n)
	}
}

// Lookup returns owner's address, if it has one.
func (a *IPAM) Lookup(owner string) (net.IP, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	n, ok := a.byOwner[owner]
	if !ok {
		return nil, false
	}
	return toIP(n), true
}

// InUse is the number of assigned addresses.
func (a *IPAM) InUse() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.byAddr)
}
