package desired

import (
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
	"github.com/ipvs-operator/ipvs-operator/ipvs/plan"
)

// conditions are what decides whether an endpoint gets traffic, merged over every slice that lists it.
type conditions struct {
	ready bool
	// servingTerminating: still serving while its pod shuts down; used only when nothing is ready.
	servingTerminating bool
	// local: on this node, for internalTrafficPolicy: Local.
	local bool
}

// portEndpoints are the endpoints of one Service port in one address family, keyed by (IP, target port).
type portEndpoints map[ipvs.DestinationKey]*conditions

// endpointsByPort merges the endpoints of every slice of the given family, per Service port (same index as
// ports). The target port comes from each slice's own port entry with the Service port's name and protocol,
// so named targetPorts and pods listening on different numbers work. An endpoint listed by several slices
// (the EndpointSlice controller may do so briefly while moving it) counts once, with the most usable of its
// conditions, so the result does not depend on the order of slices.
func endpointsByPort(endpointSlices []*discoveryv1.EndpointSlice, family discoveryv1.AddressType, ports []servicePort, nodeName string) []portEndpoints {
	out := make([]portEndpoints, len(ports))
	for _, es := range endpointSlices {
		if es == nil || es.AddressType != family || notProxied(es) {
			continue
		}
		var eps []sliceEndpoint // parsed once per slice, on first use
		for i, sp := range ports {
			target, ok := targetPort(es, sp)
			if !ok {
				continue
			}
			if eps == nil {
				eps = parseEndpoints(es, nodeName)
			}
			if out[i] == nil {
				out[i] = make(portEndpoints, len(eps))
			}
			for _, ep := range eps {
				k := ipvs.DestinationKey{Address: ep.addr, Port: target}
				c := out[i][k]
				if c == nil {
					c = &conditions{}
					out[i][k] = c
				}
				c.ready = c.ready || ep.ready
				c.servingTerminating = c.servingTerminating || ep.servingTerminating
				c.local = c.local || ep.local
			}
		}
	}
	return out
}

// notProxied reports a slice labelled service.kubernetes.io/headless (any value): kube-proxy's EndpointSlice
// informer excludes such slices, so its endpoints are served by DNS only, whatever the Service's ClusterIP.
// The EndpointSlice controller puts the label on the slices of headless Services; hand-made slices may carry
// it to take their endpoints out of the proxy (upstream's "should implement service.kubernetes.io/headless").
func notProxied(es *discoveryv1.EndpointSlice) bool {
	_, ok := es.Labels[corev1.IsHeadlessService]
	return ok
}

// targetPort finds the slice's port for a Service port: same name (both may be empty for a single-port
// Service) and protocol.
func targetPort(es *discoveryv1.EndpointSlice, sp servicePort) (uint16, bool) {
	for _, p := range es.Ports {
		name, proto := "", corev1.ProtocolTCP
		if p.Name != nil {
			name = *p.Name
		}
		if p.Protocol != nil {
			proto = *p.Protocol
		}
		if name != sp.name || proto != sp.k8sProtocol {
			continue
		}
		// A nil port means "all ports" in the API, which a masquerading real server cannot express.
		if p.Port == nil || *p.Port < 1 || *p.Port > 65535 {
			return 0, false
		}
		return uint16(*p.Port), true
	}
	return 0, false
}

type sliceEndpoint struct {
	addr netip.Addr
	conditions
}

// parseEndpoints reads a slice's endpoints, skipping any whose address is not a plain IP of the slice's
// family: one bad hand-written entry must not take the Service down.
func parseEndpoints(es *discoveryv1.EndpointSlice, nodeName string) []sliceEndpoint {
	out := make([]sliceEndpoint, 0, len(es.Endpoints))
	for _, ep := range es.Endpoints {
		if len(ep.Addresses) == 0 {
			continue
		}
		// Only the first address counts: the API says consumers may assume all of them are fungible.
		a, err := netip.ParseAddr(ep.Addresses[0])
		if err != nil || a.Zone() != "" || a.Is4In6() || a.Is4() != (es.AddressType == discoveryv1.AddressTypeIPv4) {
			continue
		}
		// As kube-proxy reads them: ready unless said otherwise, serving unless said otherwise, terminating
		// only if said so.
		cond := ep.Conditions
		ready := cond.Ready == nil || *cond.Ready
		serving := cond.Serving == nil || *cond.Serving
		terminating := cond.Terminating != nil && *cond.Terminating
		out = append(out, sliceEndpoint{addr: a, conditions: conditions{
			ready:              ready,
			servingTerminating: serving && terminating,
			local:              nodeName != "" && ep.NodeName != nil && *ep.NodeName == nodeName,
		}})
	}
	return out
}

// usable returns the real servers for the endpoints that should get traffic, sorted, weight 1: the ready
// ones, or if none is ready the serving-and-terminating ones, so connections keep working while the last
// pods shut down (kube-proxy's rule). With localOnly (internalTrafficPolicy: Local) only this node's
// endpoints are candidates, and the fallback is decided among them.
func (pe portEndpoints) usable(localOnly bool) []ipvs.Destination {
	pick := func(ok func(*conditions) bool) []ipvs.Destination {
		var out []ipvs.Destination
		for k, c := range pe {
			if (!localOnly || c.local) && ok(c) {
				out = append(out, ipvs.Destination{DestinationKey: k, Weight: 1})
			}
		}
		return out
	}
	out := pick(func(c *conditions) bool { return c.ready })
	if len(out) == 0 {
		out = pick(func(c *conditions) bool { return c.servingTerminating })
	}
	slices.SortFunc(out, func(a, b ipvs.Destination) int {
		return plan.CompareDestinationKeys(a.DestinationKey, b.DestinationKey)
	})
	return out
}
