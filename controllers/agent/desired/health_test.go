package desired

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/ipvs-operator/ipvs-operator/controllers/agent/health"
)

// downView says the targets it lists ("addr:port") are unhealthy.
type downView map[string]bool

func (v downView) Unhealthy(t health.Target) bool { return v[t.AddrPort().String()] }

var tcpCheck = health.Check{Protocol: health.TCP, Period: 5 * time.Second, Timeout: time.Second, UnhealthyThreshold: 3, HealthyThreshold: 2}

func checkOn(port *intstr.IntOrString) *Policy {
	return &Policy{Scheduler: "rr", DrainTimeout: 30 * time.Second, HealthCheck: &HealthCheck{Check: tcpCheck, Port: port}}
}

func TestTranslateHealth(t *testing.T) {
	metricsPort := []discoveryv1.EndpointPort{eport("http", 8080, corev1.ProtocolTCP), eport("metrics", 9090, corev1.ProtocolTCP)}
	twoPorts := withPorts(
		corev1.ServicePort{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromString("http")},
		corev1.ServicePort{Name: "metrics", Port: 9090, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromString("prom")},
	)
	for _, tc := range []struct {
		name        string
		svc         *corev1.Service
		slices      []*discoveryv1.EndpointSlice
		policy      *Policy
		down        downView
		want        string
		wantTargets string
		wantOut     int
		wantPanic   string
	}{{
		name:   "no health check: unhealthy verdicts are ignored, nothing probed",
		svc:    service(),
		slices: []*discoveryv1.EndpointSlice{v4("a", ep("10.244.1.5"), ep("10.244.1.6"))},
		policy: &Policy{Scheduler: "rr", DrainTimeout: 30 * time.Second},
		down:   downView{"10.244.1.5:8080": true},
		want:   lines("vips 10.96.0.10", "-t 10.96.0.10:80 -s rr -> 10.244.1.5:8080 10.244.1.6:8080", "drain 30s"),
	}, {
		name:        "all healthy: every ready endpoint is probed on its own target port",
		svc:         service(),
		slices:      []*discoveryv1.EndpointSlice{v4("a", ep("10.244.1.5"), ep("10.244.1.6"), ep("10.244.1.7", notReady))},
		policy:      checkOn(nil),
		want:        lines("vips 10.96.0.10", "-t 10.96.0.10:80 -s rr -> 10.244.1.5:8080 10.244.1.6:8080", "drain 30s"),
		wantTargets: "tcp://10.244.1.5:8080 tcp://10.244.1.6:8080",
	}, {
		name:        "an unhealthy endpoint goes to weight 0 (ready AND not unhealthy), still probed",
		svc:         service(),
		slices:      []*discoveryv1.EndpointSlice{v4("a", ep("10.244.1.5"), ep("10.244.1.6"))},
		policy:      checkOn(nil),
		down:        downView{"10.244.1.5:8080": true},
		want:        lines("vips 10.96.0.10", "-t 10.96.0.10:80 -s rr -> 10.244.1.5:8080(w0) 10.244.1.6:8080", "drain 30s"),
		wantTargets: "tcp://10.244.1.5:8080 tcp://10.244.1.6:8080",
		wantOut:     1,
	}, {
		name:        "drain 0: an unhealthy endpoint is left out, as a departed one is deleted at once",
		svc:         service(),
		slices:      []*discoveryv1.EndpointSlice{v4("a", ep("10.244.1.5"), ep("10.244.1.6"))},
		policy:      &Policy{Scheduler: "rr", HealthCheck: &HealthCheck{Check: tcpCheck}},
		down:        downView{"10.244.1.5:8080": true},
		want:        lines("vips 10.96.0.10", "-t 10.96.0.10:80 -s rr -> 10.244.1.6:8080", "drain 0s"),
		wantTargets: "tcp://10.244.1.5:8080 tcp://10.244.1.6:8080",
		wantOut:     1,
	}, {
		name:        "UDP: an unhealthy endpoint is left out (weight 0 would keep its flows stuck on it)",
		svc:         service(withPorts(sport("dns", 53, corev1.ProtocolUDP))),
		slices:      []*discoveryv1.EndpointSlice{slice("a", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{eport("dns", 5353, corev1.ProtocolUDP)}, ep("10.244.1.5"), ep("10.244.1.6"))},
		policy:      checkOn(nil),
		down:        downView{"10.244.1.5:5353": true},
		want:        lines("vips 10.96.0.10", "-u 10.96.0.10:53 -s rr -> 10.244.1.6:5353", "drain 30s"),
		wantTargets: "tcp://10.244.1.5:5353 tcp://10.244.1.6:5353",
		wantOut:     1,
	}, {
		name:        "every endpoint unhealthy: panic mode keeps them all",
		svc:         service(),
		slices:      []*discoveryv1.EndpointSlice{v4("a", ep("10.244.1.5"), ep("10.244.1.6"))},
		policy:      checkOn(nil),
		down:        downView{"10.244.1.5:8080": true, "10.244.1.6:8080": true},
		want:        lines("vips 10.96.0.10", "-t 10.96.0.10:80 -s rr -> 10.244.1.5:8080 10.244.1.6:8080", "drain 30s"),
		wantTargets: "tcp://10.244.1.5:8080 tcp://10.244.1.6:8080",
		wantPanic:   "-t 10.96.0.10:80",
	}, {
		name:   "no endpoints: no panic",
		svc:    service(),
		slices: nil,
		policy: checkOn(nil),
		want:   lines("vips 10.96.0.10", "-t 10.96.0.10:80 -s rr ->", "drain 30s"),
	}, {
		name:        "port by number",
		svc:         service(),
		slices:      []*discoveryv1.EndpointSlice{v4("a", ep("10.244.1.5"), ep("10.244.1.6"))},
		policy:      checkOn(ptr.To(intstr.FromInt32(8081))),
		down:        downView{"10.244.1.6:8081": true, "10.244.1.5:8080": true},
		want:        lines("vips 10.96.0.10", "-t 10.96.0.10:80 -s rr -> 10.244.1.5:8080 10.244.1.6:8080(w0)", "drain 30s"),
		wantTargets: "tcp://10.244.1.5:8081 tcp://10.244.1.6:8081",
		wantOut:     1,
	}, {
		name:        "port by Service port name: both ports probed on the metrics target port",
		svc:         service(twoPorts),
		slices:      []*discoveryv1.EndpointSlice{slice("a", discoveryv1.AddressTypeIPv4, metricsPort, ep("10.244.1.5"), ep("10.244.1.6"))},
		policy:      checkOn(ptr.To(intstr.FromString("metrics"))),
		down:        downView{"10.244.1.6:9090": true},
		want:        lines("vips 10.96.0.10", "-t 10.96.0.10:80 -s rr -> 10.244.1.5:8080 10.244.1.6:8080(w0)", "-t 10.96.0.10:9090 -s rr -> 10.244.1.5:9090 10.244.1.6:9090(w0)", "drain 30s"),
		wantTargets: "tcp://10.244.1.5:9090 tcp://10.244.1.6:9090",
		wantOut:     2,
	}, {
		name:        "port by target port name",
		svc:         service(twoPorts),
		slices:      []*discoveryv1.EndpointSlice{slice("a", discoveryv1.AddressTypeIPv4, metricsPort, ep("10.244.1.5"))},
		policy:      checkOn(ptr.To(intstr.FromString("prom"))),
		want:        lines("vips 10.96.0.10", "-t 10.96.0.10:80 -s rr -> 10.244.1.5:8080", "-t 10.96.0.10:9090 -s rr -> 10.244.1.5:9090", "drain 30s"),
		wantTargets: "tcp://10.244.1.5:9090",
	}, {
		name:   "a port name nothing has: nothing probed, nothing taken out",
		svc:    service(),
		slices: []*discoveryv1.EndpointSlice{v4("a", ep("10.244.1.5"))},
		policy: checkOn(ptr.To(intstr.FromString("nope"))),
		down:   downView{"10.244.1.5:8080": true},
		want:   lines("vips 10.96.0.10", "-t 10.96.0.10:80 -s rr -> 10.244.1.5:8080", "drain 30s"),
	}} {
		t.Run(tc.name, func(t *testing.T) {
			st, h, err := Translate(tc.svc, tc.slices, tc.policy, Options{Health: tc.down})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, format(st)); diff != "" {
				t.Errorf("state (-want +got):\n%s", diff)
			}
			var targets, panics []string
			for _, tg := range h.Targets {
				targets = append(targets, tg.String())
			}
			for _, k := range h.Panic {
				panics = append(panics, k.String())
			}
			if got := strings.Join(targets, " "); got != tc.wantTargets {
				t.Errorf("targets %q, want %q", got, tc.wantTargets)
			}
			if len(h.Taken) != h.Out {
				t.Errorf("Taken lists %d real servers, Out counts %d", len(h.Taken), h.Out)
			}
			if got := strings.Join(panics, " "); got != tc.wantPanic || h.Out != tc.wantOut {
				t.Errorf("panic %q out %d, want %q %d", got, h.Out, tc.wantPanic, tc.wantOut)
			}
			// ForService is Translate's state.
			if st2, _ := ForService(tc.svc, tc.slices, tc.policy, Options{Health: tc.down}); format(st2) != format(st) {
				t.Errorf("ForService and Translate disagree:\n%s\n%s", format(st2), format(st))
			}
		})
	}
}
