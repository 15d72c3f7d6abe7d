//go:build linux

package ipvs

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// dummyVIPs implements VIPs over one reused rtnetlink handle.
type dummyVIPs struct {
	name string
	mu   sync.Mutex // guards h's socket and link
	h    *netlink.Handle
	// link is cached so that a Bind costs one round trip; it is looked up again when the kernel says the
	// device is gone (someone deleted and re-created it).
	link netlink.Link
	// sh is a second rtnetlink socket, for the requests netlink.Handle has no verb for: BindAll's batches
	// and List's dump parsed in place (vips_batch.go).
	sh *nl.SocketHandle
}

// NewDummyVIPs returns a VIPs that binds addresses to the dummy interface ifName in the caller's network
// namespace. It does not touch the kernel until EnsureInterface. The value also implements io.Closer.
func NewDummyVIPs(ifName string) (VIPs, error) { return newDummyVIPs(ifName, netns.None()) }

// NewDummyVIPsInNamespace is NewDummyVIPs for the network namespace at path (/var/run/netns/NAME,
// /proc/PID/ns/net).
func NewDummyVIPsInNamespace(ifName, path string) (VIPs, error) {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("vips: open namespace %s: %w", path, err)
	}
	defer ns.Close()
	return newDummyVIPs(ifName, ns)
}

func newDummyVIPs(ifName string, ns netns.NsHandle) (VIPs, error) {
	if ifName == "" || len(ifName) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("vips: invalid interface name %q: %w", ifName, unix.EINVAL)
	}
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("vips: open rtnetlink: %w", err)
	}
	sock, err := nl.GetNetlinkSocketAt(ns, netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("vips: open rtnetlink: %w", err)
	}
	if err := batchSocket(sock); err != nil { // BindAll's batches go through it
		sock.Close()
		h.Close()
		return nil, fmt.Errorf("vips: %w", err)
	}
	return &dummyVIPs{name: ifName, h: h, sh: &nl.SocketHandle{Socket: sock}}, nil
}

// Close releases the netlink socket.
func (v *dummyVIPs) Close() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.h.Close()
	v.sh.Socket.Close()
	return nil
}

// EnsureInterface creates the dummy interface if needed, sets NOARP and brings it up. An existing
// interface of another type is an error, never deleted.
// Equivalent to: `ip link add NAME type dummy; ip link set NAME arp off up`.
func (v *dummyVIPs) EnsureInterface() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	link, err := v.h.LinkByName(v.name)
	if isLinkNotFound(err) {
		// Dummy devices are NOARP already; the flag is set anyway, below, in case the device was changed.
		err = v.h.LinkAdd(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: v.name}})
		if err != nil && !errors.Is(err, unix.EEXIST) { // EEXIST: created concurrently
			return fmt.Errorf("vips: ip link add %s type dummy: %w", v.name, err)
		}
		link, err = v.h.LinkByName(v.name)
	}
	if err != nil {
		return fmt.Errorf("vips: ip link show %s: %w", v.name, err)
	}
	if t := link.Type(); t != "dummy" {
		return fmt.Errorf("vips: interface %s exists with type %q, not dummy", v.name, t)
	}
	if link.Attrs().RawFlags&unix.IFF_NOARP == 0 {
		if err := v.h.LinkSetARPOff(link); err != nil {
			return fmt.Errorf("vips: ip link set %s arp off: %w", v.name, err)
		}
	}
	if link.Attrs().RawFlags&unix.IFF_UP == 0 {
		if err := v.h.LinkSetUp(link); err != nil {
			return fmt.Errorf("vips: ip link set %s up: %w", v.name, err)
		}
	}
	v.link = link
	return nil
}

// InterfaceUp reports whether the dummy interface exists and is up, with one link lookup by name (not a
// dump, whatever the number of addresses or links). An interface of another type under the name counts as
// missing: it is not the agent's. Equivalent to: `ip link show NAME`.
func (v *dummyVIPs) InterfaceUp() (bool, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	link, err := v.h.LinkByName(v.name)
	if isLinkNotFound(err) {
		v.link = nil
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("vips: ip link show %s: %w", v.name, err)
	}
	if link.Type() != "dummy" {
		return false, nil
	}
	return link.Attrs().RawFlags&unix.IFF_UP != 0, nil
}

// List returns the addresses bound to the interface, sorted. IPv6 link-local addresses, which the kernel
// adds by itself when the device comes up, are not VIPs and are left out.
// Equivalent to: `ip addr show dev NAME`.
func (v *dummyVIPs) List() ([]netip.Addr, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	var addrs []netip.Addr
	err := v.withLink(func(l netlink.Link) error {
		var err error
		// A dump interrupted by a concurrent change is retried: it may be incomplete.
		for range 3 {
			addrs, err = v.listAddrs(l.Attrs().Index)
			if !errors.Is(err, nl.ErrDumpInterrupted) {
				break
			}
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("vips: ip addr show dev %s: %w", v.name, err)
	}
	out := addrs[:0]
	for _, ip := range addrs {
		ip = ip.Unmap()
		if ip.IsLinkLocalUnicast() {
			continue
		}
		out = append(out, ip)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out), nil
}

// Bind adds an address as a /32 or /128; binding a bound address is not an error. IPv6 addresses skip
// duplicate address detection (IFA_F_NODAD), so they are usable at once instead of "tentative".
// Equivalent to: `ip addr add VIP/32 dev NAME` (`ip addr add VIP/128 dev NAME nodad`).
func (v *dummyVIPs) Bind(a netip.Addr) error {
	addr, err := hostAddr(a)
	if err != nil {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	err = v.withLink(func(l netlink.Link) error { return v.h.AddrAdd(l, addr) })
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("vips: ip addr add %s dev %s: %w", addr.IPNet, v.name, err)
	}
	return nil
}

// Unbind removes an address; removing an absent address, or from an absent interface, is not an error.
// Equivalent to: `ip addr del VIP/32 dev NAME`.
func (v *dummyVIPs) Unbind(a netip.Addr) error {
	addr, err := hostAddr(a)
	if err != nil {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	err = v.withLink(func(l netlink.Link) error { return v.h.AddrDel(l, addr) })
	if err == nil || errors.Is(err, unix.EADDRNOTAVAIL) || errors.Is(err, unix.ENOENT) || isLinkNotFound(err) {
		return nil
	}
	return fmt.Errorf("vips: ip addr del %s dev %s: %w", addr.IPNet, v.name, err)
}

// DeleteInterface removes the interface and every address on it; an absent interface is not an error.
// Equivalent to: `ip link del NAME`.
func (v *dummyVIPs) DeleteInterface() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.link = nil
	link, err := v.h.LinkByName(v.name)
	if isLinkNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("vips: ip link show %s: %w", v.name, err)
	}
	if t := link.Type(); t != "dummy" {
		return fmt.Errorf("vips: interface %s has type %q, not dummy: not deleting it", v.name, t)
	}
	if err := v.h.LinkDel(link); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("vips: ip link del %s: %w", v.name, err)
	}
	return nil
}

// withLink runs op on the cached link, looking the link up first if needed and once more if the kernel
// answers that the device is gone. Callers hold v.mu.
func (v *dummyVIPs) withLink(op func(netlink.Link) error) error {
	if v.link == nil {
		if err := v.lookup(); err != nil {
			return err
		}
	}
	err := op(v.link)
	if errors.Is(err, unix.ENODEV) {
		if err := v.lookup(); err != nil {
			return err
		}
		err = op(v.link)
	}
	return err
}

func (v *dummyVIPs) lookup() error {
	link, err := v.h.LinkByName(v.name)
	if err != nil {
		v.link = nil
		if isLinkNotFound(err) {
			// Keep the errno visible to errors.Is; the message says what to do.
			return fmt.Errorf("interface %s does not exist (EnsureInterface first): %w", v.name, unix.ENODEV)
		}
		return err
	}
	v.link = link
	return nil
}

func hostAddr(a netip.Addr) (*netlink.Addr, error) {
	if !a.IsValid() || a.Is4In6() || a.Zone() != "" {
		return nil, fmt.Errorf("vips: invalid address %q: %w", a, unix.EINVAL)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(a.BitLen(), a.BitLen())}}
	if a.Is6() {
		addr.Flags = unix.IFA_F_NODAD
	}
	return addr, nil
}

func isLinkNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV)
}
