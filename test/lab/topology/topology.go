// Package topology is the lab's network, defined once: the guest's init builds it from Env (the file
// topology.env in the share), and the host side (certificates, the API server's ranges, the kubelets, the
// tests) reads the same constants.
//
//	host (127.0.0.1)                          qemu VM
//	  kube-apiserver :6443  <-- 10.0.2.100 --   root netns   eth0 10.0.2.15 (qemu user net), labd :7000
//	                                            bridge lab0 192.168.100.1/24 = the node network
//	                                            |-- netns node-a   192.168.100.11, pods 10.244.1.0/24 on cbr0
//	                                            |-- netns node-b   192.168.100.12, pods 10.244.2.0/24 on cbr0
//	                                            '-- netns outside  192.168.100.200, not a cluster member
//	Services: 10.96.0.0/16 (10.96.0.1 = kubernetes, 10.96.0.10 = kube-dns)     Pods: 10.244.0.0/16
package topology

import (
	"fmt"
	"net/netip"
	"strings"
)

// The guest's link to the host (qemu's user network).
const (
	// GuestAPIServerHost is where the guest reaches the host's kube-apiserver (a qemu guest forward).
	GuestAPIServerHost = "10.0.2.100"
	// GuestAPIServerPort is the port of GuestAPIServerHost in the guest kubeconfig.
	GuestAPIServerPort = 6443
	// GuestIP is the guest's address on the qemu user network; labd listens on GuestIP:LabdPort.
	GuestIP  = "10.0.2.15"
	LabdPort = 7000
	// GuestKubeletPort is where node i's lab kubelet serves its API: GuestIP:GuestKubeletPort+i, in the
	// guest's root network namespace, which the host reaches through a qemu port forward.
	GuestKubeletPort = 10250
)

// The cluster's networks.
const (
	// ServiceCIDR is the cluster's Service range; 10.96.0.1 is the kubernetes Service.
	ServiceCIDR = "10.96.0.0/16"
	// KubernetesServiceIP is the kubernetes Service's ClusterIP, the first address of ServiceCIDR.
	KubernetesServiceIP = "10.96.0.1"
	// ClusterDNSIP is the kube-dns Service's ClusterIP, the nameserver of every ClusterFirst pod (the lab
	// kubelets' --cluster-dns).
	ClusterDNSIP = "10.96.0.10"
	// ClusterDomain is the cluster's DNS domain (--cluster-domain).
	ClusterDomain = "cluster.local"
	// PodCIDR covers every node's pod range (Nodes' PodCIDR).
	PodCIDR = "10.244.0.0/16"
	// NodeCIDR is the node network on bridge lab0; NodeGateway is the guest's root netns on it.
	NodeCIDR    = "192.168.100.0/24"
	NodeGateway = "192.168.100.1"
	// OutsideIP is the address of the outside host, on the node network but not a cluster member. Its
	// only routes beyond the node network are the Service CIDRs through the first node.
	OutsideIP = "192.168.100.200"
)

// The IPv6 family of the dual-stack lab, the same layout in unique local addresses. IPv4 comes first
// everywhere (Service CIDRs, pod and node addresses), so a Service that asks for no family stays IPv4.
const (
	// ServiceCIDRv6 is the Service range of IPv6 ClusterIPs (kube-apiserver refuses one wider than /108).
	ServiceCIDRv6 = "fd00:10:96::/112"
	// PodCIDRv6 covers every node's IPv6 pod range (Nodes' PodCIDRv6).
	PodCIDRv6 = "fd00:10:244::/56"
	// NodeCIDRv6, NodeGatewayV6 and OutsideIPv6 are NodeCIDR, NodeGateway and OutsideIP in IPv6.
	NodeCIDRv6    = "fd00:192:168:100::/64"
	NodeGatewayV6 = "fd00:192:168:100::1"
	OutsideIPv6   = "fd00:192:168:100::200"
)

// ServiceCIDRs is the cluster's dual-stack Service range as kube-apiserver's flag takes it (IPv4 first).
func ServiceCIDRs() string { return ServiceCIDR + "," + ServiceCIDRv6 }

// PodCIDRs is the cluster's dual-stack pod range, as kube-controller-manager's --cluster-cidr takes it.
func PodCIDRs() string { return PodCIDR + "," + PodCIDRv6 }

// Node describes one lab node.
type Node struct {
	Name    string // its Node object and its network namespace in the guest
	IP      string // on the node network (its netns's eth0)
	PodCIDR string // on its cbr0 bridge, the gateway is the first address
	// IPv6 and PodCIDRv6 are the same in IPv6 (gateway ::1); a pod's IPv6 address has its IPv4 host part.
	IPv6, PodCIDRv6 string
}

// Nodes are the lab's nodes.
var Nodes = []Node{
	{Name: "node-a", IP: "192.168.100.11", PodCIDR: "10.244.1.0/24", IPv6: "fd00:192:168:100::11", PodCIDRv6: "fd00:10:244:1::/64"},
	{Name: "node-b", IP: "192.168.100.12", PodCIDR: "10.244.2.0/24", IPv6: "fd00:192:168:100::12", PodCIDRv6: "fd00:10:244:2::/64"},
}

// NodeNames are the names of Nodes, in order.
func NodeNames() []string {
	names := make([]string, len(Nodes))
	for i, n := range Nodes {
		names[i] = n.Name
	}
	return names
}

// PodGateway is the first address of a node's pod CIDR, its cbr0 bridge's address: its pods' gateway.
func (n Node) PodGateway() string { return firstAddr(n.PodCIDR).String() }

// PodBridge is the cbr0 bridge's address with the pod CIDR's length ("10.244.1.1/24").
func (n Node) PodBridge() string { return bridge(n.PodCIDR) }

// PodBridgeV6 is PodBridge in IPv6 ("fd00:10:244:1::1/64").
func (n Node) PodBridgeV6() string { return bridge(n.PodCIDRv6) }

func firstAddr(cidr string) netip.Addr { return netip.MustParsePrefix(cidr).Masked().Addr().Next() }

func bridge(cidr string) string {
	return fmt.Sprintf("%s/%d", firstAddr(cidr), netip.MustParsePrefix(cidr).Bits())
}

// Env is the topology as shell variables, for the guest's init (sourced from topology.env before it builds
// the network): LAB_NODES counts the nodes, LAB_NODE_<i>_{NAME,IP,POD_CIDR,POD_BRIDGE} and their IPv6 twins (..._IP6, ...) describe node i.
func Env() string {
	bits := netip.MustParsePrefix(NodeCIDR).Bits()
	bits6 := netip.MustParsePrefix(NodeCIDRv6).Bits()
	var b strings.Builder
	fmt.Fprintf(&b, "# written by test/lab/topology on the host\n")
	type kv struct{ k, v string }
	vars := make([]kv, 0, 14+6*len(Nodes))
	vars = append(vars,
		kv{"LAB_GUEST_IP", GuestIP},
		kv{"LAB_NODE_GW", NodeGateway},
		kv{"LAB_NODE_BITS", fmt.Sprint(bits)},
		kv{"LAB_NODE_CIDR", NodeCIDR},
		kv{"LAB_POD_CIDR", PodCIDR},
		kv{"LAB_SERVICE_CIDR", ServiceCIDR},
		kv{"LAB_OUTSIDE_IP", OutsideIP},
		kv{"LAB_LABD_PORT", fmt.Sprint(LabdPort)},
		kv{"LAB_NODES", fmt.Sprint(len(Nodes))},
		kv{"LAB_NODE_GW6", NodeGatewayV6},
		kv{"LAB_NODE_BITS6", fmt.Sprint(bits6)},
		kv{"LAB_SERVICE_CIDR6", ServiceCIDRv6},
		kv{"LAB_POD_CIDR6", PodCIDRv6},
		kv{"LAB_OUTSIDE_IP6", OutsideIPv6},
	)
	for i, n := range Nodes {
		vars = append(vars,
			kv{fmt.Sprintf("LAB_NODE_%d_NAME", i), n.Name},
			kv{fmt.Sprintf("LAB_NODE_%d_IP", i), n.IP},
			kv{fmt.Sprintf("LAB_NODE_%d_POD_CIDR", i), n.PodCIDR},
			kv{fmt.Sprintf("LAB_NODE_%d_POD_BRIDGE", i), n.PodBridge()},
			kv{fmt.Sprintf("LAB_NODE_%d_IP6", i), n.IPv6},
			kv{fmt.Sprintf("LAB_NODE_%d_POD_CIDR6", i), n.PodCIDRv6},
			kv{fmt.Sprintf("LAB_NODE_%d_POD_BRIDGE6", i), n.PodBridgeV6()},
		)
	}
	for _, e := range vars {
		fmt.Fprintf(&b, "%s=%s\n", e.k, e.v)
	}
	return b.String()
}
