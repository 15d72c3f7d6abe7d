package lab

import (
	"fmt"
	"net/netip"
	"strings"
)

// topologyEnv is /etc/lab/topology.env in the initramfs: the addresses guest/init builds the network from,
// generated from the constants in pki.go so that they are written down once. Node i's values are NODEi_*.
func topologyEnv() []byte {
	var b strings.Builder
	kv := func(k, v string) { fmt.Fprintf(&b, "%s=%s\n", k, v) }
	kv("NODE_CIDR", NodeCIDR)
	kv("NODE_PREFIX", prefixLen(NodeCIDR))
	kv("NODE_PREFIX6", prefixLen(NodeCIDRv6))
	kv("ROOT_IP", NodeRootIP)
	kv("ROOT_IP6", NodeRootIPv6)
	kv("OUTSIDE_IP", OutsideIP)
	kv("OUTSIDE_IP6", OutsideIPv6)
	kv("SERVICE_CIDR", ServiceCIDR)
	kv("SERVICE_CIDR6", ServiceCIDRv6)
	kv("POD_CIDR", PodCIDR)
	kv("NODE_COUNT", fmt.Sprint(len(LabNodes)))
	for i, n := range LabNodes {
		p := fmt.Sprintf("NODE%d_", i)
		kv(p+"NAME", n.Name)
		kv(p+"IP", n.IP)
		kv(p+"IP6", n.IPv6)
		kv(p+"POD_CIDR", n.PodCIDR)
		kv(p+"POD_CIDR6", n.PodCIDRv6)
		kv(p+"POD_GW", podGateway(n.PodCIDR))
		kv(p+"POD_GW6", podGateway(n.PodCIDRv6))
	}
	return []byte(b.String())
}

func prefixLen(cidr string) string { return fmt.Sprint(netip.MustParsePrefix(cidr).Bits()) }

// podGateway is the pod bridge's address with its prefix length: the first address of the pod CIDR.
func podGateway(cidr string) string {
	p := netip.MustParsePrefix(cidr)
	return fmt.Sprintf("%s/%d", p.Masked().Addr().Next(), p.Bits())
}
