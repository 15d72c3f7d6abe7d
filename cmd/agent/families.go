package main

import (
	"context"
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// servesIPv6 decides whether this node serves IPv6 Services, and so needs IPv6 forwarding: the cluster's
// pod CIDRs (--cluster-cidr) include an IPv6 one, or this Node has an IPv6 pod CIDR or InternalIP (the
// node IPs are how kube-proxy decides to run its IPv6 proxier). An IPv4-only node must not get
// net.ipv6.conf.all.forwarding=1: it makes the kernel drop the default routes learned from router
// advertisements. node may be nil when --cluster-cidr decides alone.
func servesIPv6(clusterCIDRs []netip.Prefix, node *corev1.Node) bool {
	for _, p := range clusterCIDRs {
		if p.Addr().Is6() {
			return true
		}
	}
	if node == nil {
		return false
	}
	cidrs := node.Spec.PodCIDRs
	if len(cidrs) == 0 && node.Spec.PodCIDR != "" {
		cidrs = []string{node.Spec.PodCIDR}
	}
	for _, c := range cidrs {
		if p, err := netip.ParsePrefix(c); err == nil && p.Addr().Is6() {
			return true
		}
	}
	for _, a := range node.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		if ip, err := netip.ParseAddr(a.Address); err == nil && ip.Is6() && !ip.Is4In6() {
			return true
		}
	}
	return false
}

// nodeServesIPv6 is servesIPv6 with this node's Node object read from the API server when --cluster-cidr
// has no IPv6 CIDR. It runs before the manager (the sysctls come before any programming), so it reads once,
// without a cache.
func nodeServesIPv6(ctx context.Context, cfg *rest.Config, f flags) (bool, error) {
	if servesIPv6(f.ClusterCIDRs, nil) {
		return true, nil
	}
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		return false, err
	}
	node := &corev1.Node{}
	if err := c.Get(ctx, client.ObjectKey{Name: f.NodeName}, node); err != nil {
		return false, fmt.Errorf("reading Node %s to tell whether it serves IPv6: %w", f.NodeName, err)
	}
	return servesIPv6(f.ClusterCIDRs, node), nil
}
