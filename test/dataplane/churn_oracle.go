package dataplane

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	lbv1alpha1 "github.com/ipvs-operator/ipvs-operator/api/v1alpha1"
	"github.com/ipvs-operator/ipvs-operator/ipvs"
)

// The churn test's oracle: what `ipvsadm -Sn` and `ip addr show ipvs0` must show on a node, computed from the
// API objects by this file alone. It deliberately does not import controllers/agent/desired or
// api/policy: a model shared with the code under test would agree with its bugs. It is written the
// way a reader of the Kubernetes API docs and kube-proxy would state the rules, not the way the agent is
// structured:
//
//   - a Service is served when labelled service.kubernetes.io/service-proxy-name=ipvs-operator (or, with
//     the agents in scope all, when it has no such label at all), is not ExternalName, and has a ClusterIP
//     (not None) and ports;
//   - one virtual server per (ClusterIP, port, protocol), scheduler from the governing ServicePolicy (the
//     oldest, by creationTimestamp then name, among those of the namespace whose valid selector matches the
//     Service's labels; rr without one), persistence = the ClientIP affinity timeout (default 10800 s);
//   - its real servers are the endpoints of the Service's EndpointSlices (label kubernetes.io/service-name)
//     at the port the slice lists under the Service port's name and protocol: the ready ones, or if none is
//     ready the serving-and-terminating ones (kube-proxy's fallback); with internalTrafficPolicy Local only
//     the endpoints on this node count, the fallback included.
//
// Real servers at weight 0 (TCP ones draining their connections) are not part of the comparison: the
// comparison sets them apart (kernelView.Draining) and the churn runner bounds how long each one stays.

// churnWorld is what the oracle reads: the API objects of one namespace.
type churnWorld struct {
	Services []corev1.Service
	Slices   []discoveryv1.EndpointSlice
	Policies []lbv1alpha1.ServicePolicy
	// ScopeAll says the agents run in scope all (no kube-proxy): unlabelled Services are theirs too.
	ScopeAll bool
}

// nodeView is a node's IPVS state for a set of VIPs, in a form two sides can be compared by: sorted lines of
// `ipvsadm -Sn` ("-A -t VIP:PORT -s SCHED [-p SECS]", and "-a -t VIP:PORT -r IP:PORT" for each real server
// in rotation, weight left out), and the VIPs bound to the agent's interface.
type nodeView struct {
	Lines []string
	VIPs  []string
}

// oracleView computes what node must show for the Services of w.
func oracleView(w churnWorld, node string) nodeView {
	var v nodeView
	for i := range w.Services {
		svc := &w.Services[i]
		proxy, labelled := svc.Labels[lbv1alpha1.ServiceProxyNameLabel]
		ours := proxy == lbv1alpha1.ServiceProxyName || (w.ScopeAll && !labelled)
		if !ours || svc.Spec.Type == corev1.ServiceTypeExternalName || len(svc.Spec.Ports) == 0 {
			continue
		}
		ips := svc.Spec.ClusterIPs
		if len(ips) == 0 {
			ips = []string{svc.Spec.ClusterIP}
		}
		sched := oracleScheduler(w.Policies, svc)
		persist := ""
		if svc.Spec.SessionAffinity == corev1.ServiceAffinityClientIP {
			secs := corev1.DefaultClientIPServiceAffinitySeconds
			if c := svc.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
				secs = *c.ClientIP.TimeoutSeconds
			}
			persist = " -p " + strconv.Itoa(int(secs))
		}
		localOnly := svc.Spec.InternalTrafficPolicy != nil && *svc.Spec.InternalTrafficPolicy == corev1.ServiceInternalTrafficPolicyLocal
		for _, ip := range ips {
			vip, err := netip.ParseAddr(ip)
			if err != nil {
				continue // "None" (headless) or empty
			}
			v.VIPs = append(v.VIPs, vip.String())
			for _, p := range svc.Spec.Ports {
				proto := p.Protocol
				if proto == "" {
					proto = corev1.ProtocolTCP
				}
				key := protoFlag(proto) + " " + netip.AddrPortFrom(vip, uint16(p.Port)).String()
				v.Lines = append(v.Lines, "-A "+key+" -s "+sched+persist)
				for _, rs := range oracleRealServers(w.Slices, svc.Name, vip.Is4(), p.Name, proto, node, localOnly) {
					v.Lines = append(v.Lines, "-a "+key+" -r "+rs)
				}
			}
		}
	}
	slices.Sort(v.Lines)
	slices.Sort(v.VIPs)
	v.VIPs = slices.Compact(v.VIPs)
	return v
}

// oracleScheduler is the scheduler of the oldest policy selecting svc, rr when none does.
func oracleScheduler(policies []lbv1alpha1.ServicePolicy, svc *corev1.Service) string {
	var best *lbv1alpha1.ServicePolicy
	for i := range policies {
		p := &policies[i]
		if p.Namespace != svc.Namespace || p.Spec.Selector == nil {
			continue
		}
		sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
		if err != nil || !sel.Matches(labels.Set(svc.Labels)) {
			continue
		}
		if best == nil || p.CreationTimestamp.Before(&best.CreationTimestamp) ||
			(p.CreationTimestamp.Equal(&best.CreationTimestamp) && p.Name < best.Name) {
			best = p
		}
	}
	if best == nil || best.Spec.Scheduler == "" {
		return string(lbv1alpha1.DefaultScheduler)
	}
	return string(best.Spec.Scheduler)
}

// oracleRealServers lists, as sorted "IP:PORT", the endpoints of the named Service port that get traffic on
// node.
func oracleRealServers(all []discoveryv1.EndpointSlice, service string, ipv4 bool, portName string, proto corev1.Protocol, node string, localOnly bool) []string {
	type cond struct{ ready, servingTerminating bool }
	found := map[string]*cond{}
	family := discoveryv1.AddressTypeIPv6
	if ipv4 {
		family = discoveryv1.AddressTypeIPv4
	}
	for _, es := range all {
		if es.Labels[discoveryv1.LabelServiceName] != service || es.AddressType != family {
			continue
		}
		var target int32
		for _, sp := range es.Ports {
			name, p := "", corev1.ProtocolTCP
			if sp.Name != nil {
				name = *sp.Name
			}
			if sp.Protocol != nil {
				p = *sp.Protocol
			}
			if name == portName && p == proto && sp.Port != nil {
				target = *sp.Port
			}
		}
		if target == 0 {
			continue
		}
		for _, ep := range es.Endpoints {
			if len(ep.Addresses) == 0 {
				continue
			}
			if localOnly && (ep.NodeName == nil || *ep.NodeName != node) {
				continue
			}
			addr, err := netip.ParseAddr(ep.Addresses[0])
			if err != nil {
				continue
			}
			k := netip.AddrPortFrom(addr, uint16(target)).String()
			c := found[k]
			if c == nil {
				c = &cond{}
				found[k] = c
			}
			isTrue := func(b *bool, unset bool) bool {
				if b == nil {
					return unset
				}
				return *b
			}
			c.ready = c.ready || isTrue(ep.Conditions.Ready, true)
			c.servingTerminating = c.servingTerminating ||
				(isTrue(ep.Conditions.Serving, true) && isTrue(ep.Conditions.Terminating, false))
		}
	}
	var ready, fallback []string
	for k, c := range found {
		if c.ready {
			ready = append(ready, k)
		} else if c.servingTerminating {
			fallback = append(fallback, k)
		}
	}
	if len(ready) == 0 {
		ready = fallback
	}
	slices.Sort(ready)
	return ready
}

func protoFlag(p corev1.Protocol) string {
	switch p {
	case corev1.ProtocolUDP:
		return "-u"
	case corev1.ProtocolSCTP:
		return "--sctp-service"
	}
	return "-t"
}

// kernelView is what a node's kernel shows for the tracked VIPs, in the oracle's form, plus the real servers
// at weight 0 ("-a -t VIP:PORT -r IP:PORT"), which are compared apart.
type kernelView struct {
	nodeView
	Draining []string
}

// viewOfKernel turns a node's parsed `ipvsadm -Sn` and `ip -o addr show dev ipvs0` into the oracle's form,
// keeping only the VIPs in tracked: the test owns those, anything else on the node (the kubernetes
// Service's, a hand-made virtual server of another spec) is not its business.
func viewOfKernel(table []ipvs.VirtualServer, addrOutput string, tracked map[string]bool) kernelView {
	var v kernelView
	for _, vs := range table {
		if !tracked[vs.Address.String()] {
			continue
		}
		key := vs.ServiceKey.String()
		line := "-A " + key + " -s " + vs.Scheduler
		if vs.Persistence > 0 {
			line += " -p " + strconv.Itoa(int(vs.Persistence.Seconds()))
		}
		v.Lines = append(v.Lines, line)
		for _, d := range vs.Destinations {
			rs := "-a " + key + " -r " + d.DestinationKey.String()
			if d.Weight > 0 {
				v.Lines = append(v.Lines, rs)
			} else {
				v.Draining = append(v.Draining, rs)
			}
		}
	}
	for _, a := range boundAddrs(addrOutput) {
		if tracked[a] {
			v.VIPs = append(v.VIPs, a)
		}
	}
	slices.Sort(v.Lines)
	slices.Sort(v.Draining)
	slices.Sort(v.VIPs)
	return v
}

// boundAddrs reads the addresses out of `ip -o addr show dev X` ("... inet 10.96.0.10/32 scope ...").
func boundAddrs(out string) []string {
	var addrs []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		for i := 0; i+1 < len(f); i++ {
			if f[i] == "inet" || f[i] == "inet6" {
				a, _, _ := strings.Cut(f[i+1], "/")
				addrs = append(addrs, a)
			}
		}
	}
	return addrs
}

// viewDiff says how got differs from want, one line per difference ("missing: ..." / "unexpected: ..."),
// and nothing when they are equal. A desired real server found at weight 0 shows as missing.
func viewDiff(want nodeView, got nodeView) []string {
	var out []string
	diff := func(what string, w, g []string) {
		for _, l := range w {
			if !slices.Contains(g, l) {
				out = append(out, fmt.Sprintf("missing %s: %s", what, l))
			}
		}
		for _, l := range g {
			if !slices.Contains(w, l) {
				out = append(out, fmt.Sprintf("unexpected %s: %s", what, l))
			}
		}
	}
	diff("line", want.Lines, got.Lines)
	diff("VIP on "+agentInterface, want.VIPs, got.VIPs)
	return out
}
