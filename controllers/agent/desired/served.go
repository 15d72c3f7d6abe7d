package desired

import (
	"net/netip"

	corev1 "k8s.io/api/core/v1"
)

// ServedClusterIPs returns the ClusterIPs the agent serves for svc: none when svc is out of scope (see
// InScope), headless, or has invalid ClusterIPs (its sync fails too). The takeover from kube-proxy binds
// exactly these before the agent first reads the kernel.
func ServedClusterIPs(svc *corev1.Service, manageAll bool) []netip.Addr {
	if !InScope(svc, manageAll) {
		return nil
	}
	ips, err := clusterIPs(svc)
	if err != nil {
		return nil
	}
	return ips
}
