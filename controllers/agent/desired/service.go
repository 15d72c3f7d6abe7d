package desired

import (
	"net/netip"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/ipvs-operator/ipvs-operator/controllers/agent/health"
	"github.com/ipvs-operator/ipvs-operator/ipvs"
	"github.com/ipvs-operator/ipvs-operator/ipvs/plan"
)

// ForService computes the IPVS state this node should hold for svc, given the EndpointSlices labelled
// kubernetes.io/service-name=<svc name> in its namespace (the caller finds them; selector-less Services with
// hand-made slices work the same) and the policy governing it (nil: defaults).
//
// Only the ClusterIP part of a Service is programmed: one virtual server per (ClusterIP, port, protocol),
// both families of a dual-stack Service, for Services of type ClusterIP, NodePort and LoadBalancer alike
// (kube-proxy ignores a Service labelled for another proxy, so its ClusterIP is ours to serve). NodePorts,
// external and load-balancer IPs are not. The State is empty for a nil Service (it is gone), one out of
// scope (see InScope), ExternalName and headless Services, and Services without ClusterIP or ports.
//
// The error, which matches ErrInvalid, is only for malformed input; it concerns this Service alone.
func ForService(svc *corev1.Service, endpointSlices []*discoveryv1.EndpointSlice, policy *Policy, opts Options) (State, error) {
	st, _, err := Translate(svc, endpointSlices, policy, opts)
	return st, err
}

// Translate is ForService that also says what the policy's health check needs probed for the Service and
// what the probes' verdicts (opts.Health) did to it; Health is empty without a health check.
func Translate(svc *corev1.Service, endpointSlices []*discoveryv1.EndpointSlice, policy *Policy, opts Options) (State, Health, error) {
	var g *gate
	if policy != nil && policy.HealthCheck != nil {
		g = &gate{check: policy.HealthCheck, view: opts.Health, targets: sets.New[health.Target]()}
	}
	st, err := forService(svc, endpointSlices, policy, opts, g)
	if err != nil || g == nil {
		return st, Health{}, err
	}
	return st, g.result(), nil
}

func forService(svc *corev1.Service, endpointSlices []*discoveryv1.EndpointSlice, policy *Policy, opts Options, g *gate) (State, error) {
	if svc == nil || !InScope(svc, opts.ManageAll) || svc.Spec.Type == corev1.ServiceTypeExternalName {
		return State{}, nil
	}
	vips, err := clusterIPs(svc)
	if err != nil || len(vips) == 0 {
		return State{}, err
	}
	ports, err := servicePorts(svc)
	if err != nil || len(ports) == 0 {
		// No port: nothing to balance, and a bound VIP would only expose the node's own listeners.
		return State{}, err
	}
	base, drain, err := balancing(svc, policy, opts)
	if err != nil {
		return State{}, err
	}

	st := State{VIPs: vips, DrainTimeout: drain, Servers: make([]ipvs.VirtualServer, 0, len(vips)*len(ports))}
	local := svc.Spec.InternalTrafficPolicy != nil && *svc.Spec.InternalTrafficPolicy == corev1.ServiceInternalTrafficPolicyLocal
	for _, vip := range vips {
		byPort := endpointsByPort(endpointSlices, addressType(vip), ports, opts.NodeName)
		for i, p := range ports {
			s := base
			s.ServiceKey = ipvs.ServiceKey{Address: vip, Port: p.port, Protocol: p.protocol}
			dests := byPort[i].usable(local)
			if g != nil {
				quiesce := st.DrainTimeoutFor(p.protocol) > 0
				dests = g.filter(s.ServiceKey, dests, g.probePort(svc, ports, byPort), quiesce)
			}
			st.Servers = append(st.Servers, ipvs.VirtualServer{Service: s, Destinations: dests})
		}
	}
	slices.SortFunc(st.Servers, func(a, b ipvs.VirtualServer) int { return plan.CompareServiceKeys(a.ServiceKey, b.ServiceKey) })
	return st, nil
}

// InScope reports whether the agent serves svc: with manageAll, every Service not labelled for another proxy;
// otherwise only those labelled ProxyNameLabel=ProxyName. A Service leaving scope gets an empty State, so a
// reconciler's event filter must still let label changes through.
func InScope(svc *corev1.Service, manageAll bool) bool {
	name, labelled := svc.Labels[ProxyNameLabel]
	if manageAll {
		return !labelled || name == ProxyName
	}
	return labelled && name == ProxyName
}

// clusterIPs returns the Service's ClusterIPs, sorted, or none for a headless Service or one without.
func clusterIPs(svc *corev1.Service) ([]netip.Addr, error) {
	ips, path := svc.Spec.ClusterIPs, field.NewPath("spec", "clusterIPs")
	if len(ips) == 0 {
		// Objects written before dual-stack, or built by hand, may only set the singular field.
		ips, path = []string{svc.Spec.ClusterIP}, field.NewPath("spec", "clusterIP")
	}
	if ips[0] == "" || ips[0] == corev1.ClusterIPNone {
		return nil, nil
	}
	out := make([]netip.Addr, 0, len(ips))
	for i, s := range ips {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" || a.Is4In6() {
			return nil, invalid(path.Index(i), s, "must be an IPv4 or IPv6 address")
		}
		for _, b := range out {
			if a.Is4() == b.Is4() {
				return nil, invalid(path.Index(i), s, "at most one address per IP family")
			}
		}
		out = append(out, a)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out, nil
}

// servicePort is a validated Service port.
type servicePort struct {
	name     string
	port     uint16
	protocol ipvs.Protocol
	// k8sProtocol is how EndpointSlice ports spell the protocol.
	k8sProtocol corev1.Protocol
}

func servicePorts(svc *corev1.Service) ([]servicePort, error) {
	out := make([]servicePort, 0, len(svc.Spec.Ports))
	for i, p := range svc.Spec.Ports {
		path := field.NewPath("spec", "ports").Index(i)
		proto := p.Protocol
		if proto == "" {
			proto = corev1.ProtocolTCP // the API server's default; hand-built objects may omit it
		}
		ip, ok := protocols[proto]
		if !ok {
			return nil, invalid(path.Child("protocol"), p.Protocol, "must be TCP, UDP or SCTP")
		}
		if p.Port < 1 || p.Port > 65535 {
			return nil, invalid(path.Child("port"), p.Port, "must be between 1 and 65535")
		}
		sp := servicePort{name: p.Name, port: uint16(p.Port), protocol: ip, k8sProtocol: proto}
		for _, q := range out {
			if q.port == sp.port && q.protocol == sp.protocol {
				return nil, invalid(path, p.Port, "duplicate port and protocol")
			}
		}
		out = append(out, sp)
	}
	return out, nil
}

var protocols = map[corev1.Protocol]ipvs.Protocol{
	corev1.ProtocolTCP:  ipvs.TCP,
	corev1.ProtocolUDP:  ipvs.UDP,
	corev1.ProtocolSCTP: ipvs.SCTP,
}

// balancing returns the scheduler and persistence shared by the Service's virtual servers, and its drain
// timeout.
func balancing(svc *corev1.Service, policy *Policy, opts Options) (ipvs.Service, time.Duration, error) {
	s := ipvs.Service{Scheduler: opts.DefaultScheduler}
	drain := DefaultDrainTimeout
	if policy != nil {
		if policy.Scheduler != "" {
			s.Scheduler = policy.Scheduler
		}
		if policy.DrainTimeout < 0 {
			return s, 0, invalid(field.NewPath("policy", "drainTimeout"), policy.DrainTimeout.String(), "must not be negative")
		}
		drain = policy.DrainTimeout
	}
	if s.Scheduler == "" {
		s.Scheduler = DefaultScheduler
	}
	if svc.Spec.SessionAffinity == corev1.ServiceAffinityClientIP {
		secs := corev1.DefaultClientIPServiceAffinitySeconds
		if c := svc.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
			secs = *c.ClientIP.TimeoutSeconds
		}
		if secs <= 0 {
			return s, 0, invalid(field.NewPath("spec", "sessionAffinityConfig", "clientIP", "timeoutSeconds"), secs, "must be positive")
		}
		s.Persistence = time.Duration(secs) * time.Second
	}
	return s, drain, nil
}

func addressType(a netip.Addr) discoveryv1.AddressType {
	if a.Is4() {
		return discoveryv1.AddressTypeIPv4
	}
	return discoveryv1.AddressTypeIPv6
}
