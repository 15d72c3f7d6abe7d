package kubelet

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// podNetwork wires pod network namespaces to the node's pod bridge. Every netlink call goes through a handle
// bound to an explicit namespace, so no goroutine ever switches its thread's namespace.
type podNetwork struct {
	node   netns.NsHandle // the node's network namespace, where the bridge lives
	bridge string
	cidr   *net.IPNet
	// cidr6 is the node's IPv6 pod CIDR on a dual-stack node, else nil.
	cidr6 *net.IPNet
}

// podInterface is what a pod's eth0 gets.
type podInterface struct {
	HostVeth string // bridge port in the node namespace
	IP       net.IP
	Gateway  net.IP
	Mask     net.IPMask
	// IPv6 and Gateway6 are set on a dual-stack node.
	IPv6, Gateway6 net.IP
}

// gateway is the first address of the pod CIDR, the bridge's address.
func gateway(cidr *net.IPNet) net.IP {
	if cidr.IP.To4() == nil {
		ip := make(net.IP, net.IPv6len)
		copy(ip, cidr.IP.Mask(cidr.Mask))
		ip[15]++
		return ip
	}
	ip := toIP(mustUint32(cidr.IP.Mask(cidr.Mask)) + 1)
	return ip
}

func mustUint32(ip net.IP) uint32 {
	n, _ := toUint32(ip)
	return n
}

// Setup plugs the pod namespace at podNS into the bridge with address ip (and on a dual-stack node its
// IPv6Pair, without duplicate address detection, which would keep it tentative for a second).
// Equivalent to:
//
//	ip link add VETH type veth peer name eth0 netns POD
//	ip link set VETH master BRIDGE; ip link set VETH type bridge_slave hairpin on; ip link set VETH up
//	ip -n POD link set lo up; ip -n POD addr add IP/MASK dev eth0; ip -n POD link set eth0 up
//	ip -n POD route add default via GATEWAY
//	ip -n POD addr add IP6/MASK6 dev eth0 nodad; ip -n POD -6 route add default via GATEWAY6
func (n *podNetwork) Setup(podNS netns.NsHandle, hostVeth string, ip net.IP) (podInterface, error) {
	iface := podInterface{HostVeth: hostVeth, IP: ip, Gateway: gateway(n.cidr), Mask: n.cidr.Mask}
	if n.cidr6 != nil {
		iface.IPv6, iface.Gateway6 = IPv6Pair(ip, n.cidr, n.cidr6), gateway(n.cidr6)
	}
	node, err := netlink.NewHandleAt(n.node)
	if err != nil {
		return iface, fmt.Errorf("netlink in the node namespace: %w", err)
	}
	defer node.Close()
	pod, err := netlink.NewHandleAt(podNS)
	if err != nil {
		return iface, fmt.Errorf("netlink in the pod namespace: %w", err)
	}
	defer pod.Close()

	bridge, err := node.LinkByName(n.bridge)
	if err != nil {
		return iface, fmt.Errorf("pod bridge %s: %w", n.bridge, err)
	}
	// A leftover host end (a pod recreated under the same name) would make the add fail.
	if old, err := node.LinkByName(hostVeth); err == nil {
		_ = node.LinkDel(old)
	}
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: hostVeth, MTU: bridge.Attrs().MTU},
		PeerName:      "eth0",
		PeerNamespace: netlink.NsFd(podNS),
	}
	if err := node.LinkAdd(veth); err != nil {
		return iface, fmt.Errorf("adding veth %s: %w", hostVeth, err)
	}
	host, err := node.LinkByName(hostVeth)
	if err != nil {
		return iface, fmt.Errorf("veth %s: %w", hostVeth, err)
	}
	if err := node.LinkSetMaster(host, bridge); err != nil {
		return iface, fmt.Errorf("attaching %s to %s: %w", hostVeth, n.bridge, err)
	}
	// Hairpin lets a pod's packets come back out of the port they entered: a pod reaching itself via its
	// Service.
	if err := node.LinkSetHairpin(host, true); err != nil {
		return iface, fmt.Errorf("hairpin on %s: %w", hostVeth, err)
	}
	if err := node.LinkSetUp(host); err != nil {
		return iface, fmt.Errorf("bringing %s up: %w", hostVeth, err)
	}

	lo, err := pod.LinkByName("lo")
	if err != nil {
		return iface, fmt.Errorf("pod loopback: %w", err)
	}
	if err := pod.LinkSetUp(lo); err != nil {
		return iface, fmt.Errorf("bringing pod loopback up: %w", err)
	}
	eth0, err := pod.LinkByName("eth0")
	if err != nil {
		return iface, fmt.Errorf("pod eth0: %w", err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: ip, Mask: n.cidr.Mask}}
	if err := pod.AddrAdd(eth0, addr); err != nil && !errors.Is(err, unix.EEXIST) {
		return iface, fmt.Errorf("adding %s to pod eth0: %w", addr.IPNet, err)
	}
	if err := pod.LinkSetUp(eth0); err != nil {
		return iface, fmt.Errorf("bringing pod eth0 up: %w", err)
	}
	route := &netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: iface.Gateway}
	if err := pod.RouteAdd(route); err != nil && !errors.Is(err, unix.EEXIST) {
		return iface, fmt.Errorf("default route via %s: %w", iface.Gateway, err)
	}
	if iface.IPv6 == nil {
		return iface, nil
	}
	addr6 := &netlink.Addr{IPNet: &net.IPNet{IP: iface.IPv6, Mask: n.cidr6.Mask}, Flags: unix.IFA_F_NODAD}
	if err := pod.AddrAdd(eth0, addr6); err != nil && !errors.Is(err, unix.EEXIST) {
		return iface, fmt.Errorf("adding %s to pod eth0: %w", addr6.IPNet, err)
	}
	route6 := &netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: iface.Gateway6}
	if err := pod.RouteAdd(route6); err != nil && !errors.Is(err, unix.EEXIST) {
		return iface, fmt.Errorf("default route via %s: %w", iface.Gateway6, err)
	}
	return iface, nil
}

// Teardown removes the host end of the pod's veth (which removes eth0 in the pod too).
// Equivalent to: `ip link del VETH`.
func (n *podNetwork) Teardown(hostVeth string) error {
	node, err := netlink.NewHandleAt(n.node)
	if err != nil {
		return fmt.Errorf("netlink in the node namespace: %w", err)
	}
	defer node.Close()
	link, err := node.LinkByName(hostVeth)
	if err != nil {
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) {
			return nil
		}
		return fmt.Errorf("veth %s: %w", hostVeth, err)
	}
	if err := node.LinkDel(link); err != nil {
		return fmt.Errorf("deleting veth %s: %w", hostVeth, err)
	}
	return nil
}

// hairpinOn reports the hairpin flag of a bridge port (tests and diagnostics).
func (n *podNetwork) hairpinOn(hostVeth string) (bool, error) {
	node, err := netlink.NewHandleAt(n.node)
	if err != nil {
		return false, err
	}
	defer node.Close()
	link, err := node.LinkByName(hostVeth)
	if err != nil {
		return false, err
	}
	protinfo, err := node.LinkGetProtinfo(link)
	if err != nil {
		return false, err
	}
	return protinfo.Hairpin, nil
}
