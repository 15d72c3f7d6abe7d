package desired

import (
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/sets"

	"github.com/ipvs-operator/ipvs-operator/controllers/agent/health"
	"github.com/ipvs-operator/ipvs-operator/ipvs"
	"github.com/ipvs-operator/ipvs-operator/ipvs/plan"
)

// Health is what a Service's health check asks of the prober and what the verdicts did to the Service.
type Health struct {
	// Targets are what must be probed for the Service: one per (endpoint address, probe port) of the real
	// servers that readiness makes usable, sorted. Endpoints that are not usable anyway are not probed, and
	// one that becomes usable starts healthy (the prober has not seen it).
	Targets []health.Target
	// Out counts the real servers left out because their probe target is unhealthy (per virtual server).
	Out int
	// Taken lists them (not those of virtual servers in panic mode), in the order of the state.
	Taken []Taken
	// Panic lists the virtual servers whose every usable endpoint is unhealthy: they keep all of them, so
	// a broken checker (or a network problem on this node) never black-holes a Service.
	Panic []ipvs.ServiceKey
}

// Taken is a real server kept out of rotation because its probe target is unhealthy.
type Taken struct {
	Server ipvs.ServiceKey
	Real   ipvs.DestinationKey
	Target health.Target
}

// gate applies a health check while a Service is translated.
type gate struct {
	check   *HealthCheck
	view    health.View
	targets sets.Set[health.Target]
	out     int
	taken   []Taken
	panic   []ipvs.ServiceKey
}

func (g *gate) result() Health {
	ts := g.targets.UnsortedList()
	slices.SortFunc(ts, func(a, b health.Target) int {
		return plan.CompareDestinationKeys(ipvs.DestinationKey{Address: a.Addr, Port: a.Port}, ipvs.DestinationKey{Address: b.Addr, Port: b.Port})
	})
	return Health{Targets: ts, Out: g.out, Taken: g.taken, Panic: g.panic}
}

// filter gates the real servers on their probe targets' verdicts: a real server is usable when it is ready
// AND not unhealthy. An unhealthy one stays at weight 0 when quiesce is set (a TCP virtual server whose
// policy drains: its connections continue, new ones avoid it, as keepalived and Seesaw quiesce a failed real
// server; the kernel's weight 0 is also what lets a restarted agent remember it), and is left out otherwise
// (UDP and SCTP, or a drain of 0: deleted at once, as a departed endpoint is). When none would be left
// usable, all of them keep their weight (panic mode). A real server whose probe port cannot be resolved is
// not probed and stays usable: the check cannot say anything about it.
func (g *gate) filter(vs ipvs.ServiceKey, dests []ipvs.Destination, probePort func(ipvs.DestinationKey) (uint16, bool), quiesce bool) []ipvs.Destination {
	out := make([]ipvs.Destination, 0, len(dests))
	usable := 0
	var taken []Taken
	for _, d := range dests {
		port, ok := probePort(d.DestinationKey)
		if ok {
			t := health.Target{Addr: d.Address, Port: port, Check: g.check.Check}
			g.targets.Insert(t)
			if g.view != nil && g.view.Unhealthy(t) {
				taken = append(taken, Taken{Server: vs, Real: d.DestinationKey, Target: t})
				if quiesce {
					out = append(out, ipvs.Destination{DestinationKey: d.DestinationKey, Weight: 0})
				}
				continue
			}
		}
		usable++
		out = append(out, d)
	}
	if usable == 0 && len(dests) > 0 {
		g.panic = append(g.panic, vs)
		return dests
	}
	g.out += len(taken)
	g.taken = append(g.taken, taken...)
	return out
}

// probePort returns how the probe port of a real server is found: its own target port,
// the check's port number, or, for a name, the target port (from the same endpoint's slices) of the Service
// port with that name or whose targetPort is that name.
func (g *gate) probePort(svc *corev1.Service, ports []servicePort, byPort []portEndpoints) func(ipvs.DestinationKey) (uint16, bool) {
	p := g.check.Port
	switch {
	case p == nil:
		return func(k ipvs.DestinationKey) (uint16, bool) { return k.Port, true }
	case p.Type == intstr.Int:
		n := p.IntValue()
		return func(ipvs.DestinationKey) (uint16, bool) { return uint16(n), n >= 1 && n <= 65535 }
	}
	j := slices.IndexFunc(ports, func(sp servicePort) bool { return sp.name == p.StrVal })
	if j < 0 {
		j = slices.IndexFunc(svc.Spec.Ports, func(sp corev1.ServicePort) bool {
			return sp.TargetPort.Type == intstr.String && sp.TargetPort.StrVal == p.StrVal
		})
	}
	if j < 0 || j >= len(byPort) {
		return func(ipvs.DestinationKey) (uint16, bool) { return 0, false }
	}
	byAddr := make(map[netip.Addr]uint16, len(byPort[j]))
	for k := range byPort[j] {
		byAddr[k.Address] = k.Port
	}
	return func(k ipvs.DestinationKey) (uint16, bool) {
		port, ok := byAddr[k.Address]
		return port, ok
	}
}
