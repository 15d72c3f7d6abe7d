package desired

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
)

const thisNode = "node-a"

// service returns a labelled single-port ClusterIP Service 10.96.0.10:80/TCP named "http", changed by muts.
func service(muts ...func(*corev1.Service)) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web", Labels: map[string]string{ProxyNameLabel: ProxyName}},
		Spec: corev1.ServiceSpec{
			Type:       corev1.ServiceTypeClusterIP,
			ClusterIP:  "10.96.0.10",
			ClusterIPs: []string{"10.96.0.10"},
			Selector:   map[string]string{"app": "web"},
			Ports:      []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromString("http")}},
		},
	}
	for _, m := range muts {
		m(s)
	}
	return s
}

func withPorts(ports ...corev1.ServicePort) func(*corev1.Service) {
	return func(s *corev1.Service) { s.Spec.Ports = ports }
}

func withClusterIPs(ips ...string) func(*corev1.Service) {
	return func(s *corev1.Service) {
		s.Spec.ClusterIPs = ips
		s.Spec.ClusterIP = ""
		if len(ips) > 0 {
			s.Spec.ClusterIP = ips[0]
		}
	}
}

func withLabels(l map[string]string) func(*corev1.Service) {
	return func(s *corev1.Service) { s.Labels = l }
}

func sport(name string, port int32, proto corev1.Protocol) corev1.ServicePort {
	return corev1.ServicePort{Name: name, Port: port, Protocol: proto, TargetPort: intstr.FromString(name)}
}

func eport(name string, port int32, proto corev1.Protocol) discoveryv1.EndpointPort {
	return discoveryv1.EndpointPort{Name: ptr.To(name), Port: ptr.To(port), Protocol: ptr.To(proto)}
}

var httpPort = []discoveryv1.EndpointPort{eport("http", 8080, corev1.ProtocolTCP)}

func slice(name string, family discoveryv1.AddressType, ports []discoveryv1.EndpointPort, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "ns", Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: family,
		Ports:       ports,
		Endpoints:   eps,
	}
}

func v4(name string, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return slice(name, discoveryv1.AddressTypeIPv4, httpPort, eps...)
}

// ep is a ready endpoint on another node; muts change it.
func ep(addr string, muts ...func(*discoveryv1.Endpoint)) discoveryv1.Endpoint {
	e := discoveryv1.Endpoint{Addresses: []string{addr}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}, NodeName: ptr.To("node-b")}
	for _, m := range muts {
		m(&e)
	}
	return e
}

func notReady(e *discoveryv1.Endpoint)   { e.Conditions.Ready = ptr.To(false) }
func readyUnset(e *discoveryv1.Endpoint) { e.Conditions = discoveryv1.EndpointConditions{} }
func onThisNode(e *discoveryv1.Endpoint) { e.NodeName = ptr.To(thisNode) }
func servingTerminating(e *discoveryv1.Endpoint) {
	e.Conditions = discoveryv1.EndpointConditions{Ready: ptr.To(false), Serving: ptr.To(true), Terminating: ptr.To(true)}
}

// readyTerminating is how the EndpointSlice controller lists a terminating, unready pod of a Service with
// publishNotReadyAddresses: ready, not serving, terminating.
func readyTerminating(e *discoveryv1.Endpoint) {
	e.Conditions = discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(false), Terminating: ptr.To(true)}
}
func terminatingNotServing(e *discoveryv1.Endpoint) {
	e.Conditions = discoveryv1.EndpointConditions{Ready: ptr.To(false), Serving: ptr.To(false), Terminating: ptr.To(true)}
}

// format renders a State compactly: one line for the VIPs, then one per virtual server, then the drain.
func format(st State) string {
	if st.IsZero() {
		return ""
	}
	var b strings.Builder
	vips := make([]string, 0, len(st.VIPs))
	for _, v := range st.VIPs {
		vips = append(vips, v.String())
	}
	fmt.Fprintf(&b, "vips %s\n", strings.Join(vips, " "))
	for _, s := range st.Servers {
		fmt.Fprintf(&b, "%s -s %s", s.ServiceKey, s.Scheduler)
		if s.Persistence > 0 {
			fmt.Fprintf(&b, " -p %d", int(s.Persistence/time.Second))
		}
		b.WriteString(" ->")
		for _, d := range s.Destinations {
			fmt.Fprintf(&b, " %s", d.DestinationKey)
			if d.Weight != 1 {
				fmt.Fprintf(&b, "(w%d)", d.Weight)
			}
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "drain %s\n", st.DrainTimeout)
	return b.String()
}

func lines(l ...string) string { return strings.Join(l, "\n") + "\n" }

var trafficLocal = ptr.To(corev1.ServiceInternalTrafficPolicyLocal)

// forServiceCases are TestForService's table; FuzzForService starts from them too.
var forServiceCases = []struct {
	name   string
	svc    *corev1.Service
	slices []*discoveryv1.EndpointSlice
	policy *Policy
	opts   Options
	want   string
}{{
	name:   "ready endpoints of a labelled ClusterIP Service, sorted, weight 1, default policy",
	svc:    service(),
	slices: []*discoveryv1.EndpointSlice{v4("web-1", ep("10.244.2.5"), ep("10.244.1.5"))},
	want:   lines("vips 10.96.0.10", "-t 10.96.0.10:80 -s rr -> 10.244.1.5:8080 10.244.2.5:8080", "drain 30s"),
}, {
	name: "nil Service (deleted): empty",
}, {
	name:   "unlabelled Service without ManageAll: out of scope, empty",
	svc:    service(withLabels(nil)),
	slices: []*discoveryv1.EndpointSlice{v4("web-1", ep("10.244.1.5"))},
}, {
	name:   "unlabelled Service with ManageAll: served",
	svc:    service(withLabels(nil)),
	slices: []*discoveryv1.EndpointSlice{v4("web-1", ep("10.244.1.5"))},
	opts:   Options{ManageAll: true},
	want:   lines("vips 10.96.0.10", "-t 10.96.0.10:80 -s rr -> 10.244.1.5:8080", "drain 30s"),
}, {
	name:   "Service labelled for another proxy, even with ManageAll: empty",
	svc:    service(withLabels(map[string]string{ProxyNameLabel: "other-proxy"})),
	slices: []*discoveryv1.EndpointSlice{v4("web-1", ep("10.244.1.5"))},
	opts:   Options{ManageAll: true},
}, {
	name:   "headless Service: empty",
	svc:    service(withClusterIPs("None")),
	slices: []*discoveryv1.EndpointSlice{v4("web-1", ep("10.244.1.5"))},
}, {
	name: "ExternalName Service: empty",
	svc: service(withClusterIPs(), func(s *corev1.Service) {
		s.Spec.Type, s.Spec.ExternalName = corev1.ServiceTypeExternalName, "example.org"
	}),
}, {
	name:   "Service without ClusterIP: empty",
	svc:    service(withClusterIPs()),
	slices: []*discoveryv1.EndpointSlice{v4("web-1", ep("10.244.1.5"))},
}, {
	name:   "Service without ports: empty, no VIP bound",
	svc:    service(withPorts()),
	slices: []*discoveryv1.EndpointSlice{v4("web-1", ep("10.244.1.5"))},
}, {
	name:   "NodePort Service: its ClusterIP is served, not its node port",
	svc:    service(func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeNodePort; s.Spec.Ports[0].NodePort = 30080 }),
	slices: []*discoveryv1.EndpointSlice{v4("web-1", ep("10.244.1.5"))},
	want:   lines("vips 10.96.0.10", "-t 10.96.0.10:80 -s rr -> 10.244.1.5:8080", "drain 30s"),
}, {
	name:   "only the singular spec.clusterIP set (object from before dual-stack)",
	svc:    service(func(s *corev1.Service) { s.Spec.ClusterIPs = nil }),
	slices: []*discoveryv1.EndpointSlice{v4("web-1", ep("10.244.1.5"))},
	want:   lines("vips 10.96.0.10", "-t 10.96.0.10:80 -s rr -> 10.244.1.5:8080", "drain 30s"),
}, {
	name: "dual-stack: both families, each fed only by slices of its family",
	svc:  service(withClusterIPs("fd00::10", "10.96.0.10")),
	slices: []*discoveryv1.EndpointSlice{
		slice("web-v6", discoveryv1.AddressTypeIPv6, httpPort, ep("fd00:244::5")),
		v4("web-v4", ep("10.244.1.5")),
	},
	want: lines("vips 10.96.0.10 fd00::10",
		"-t 10.96.0.10:80 -s rr -> 10.244.1.5:8080",
		"-t [fd00::10]:80 -s rr -> [fd00:244::5]:8080",
		"drain 30s"),
}, {
	name: "multi-port TCP, UDP and SCTP; slice ports matched by name and protocol",
	svc: service(withPorts(sport("dns", 53, corev1.ProtocolUDP), sport("dns-tcp", 53, corev1.ProtocolTCP),
		sport("sig", 2905, corev1.ProtocolSCTP))),
	slices: []*discoveryv1.EndpointSlice{slice("web-1", discoveryv1.AddressTypeIPv4,
		[]discoveryv1.EndpointPort{eport("sig", 3905, corev1.ProtocolSCTP), eport("dns-tcp", 1053, corev1.ProtocolTCP),
			eport("dns", 5353, corev1.ProtocolUDP), eport("dns", 9999, corev1.ProtocolTCP)},
		ep("10.244.1.5"))},
	want: lines("vips 10.96.0.10",
		"-t 10.96.0.10:53 -s rr -> 10.244.1.5:1053",
		"-u 10.96.0.10:53 -s rr -> 10.244.1.5:5353",
		"--sctp-service 10.96.0.10:2905 -s rr -> 10.244.1.5:3905",
		"drain 30s"),
}, {
	name: "named targetPort resolved per slice: pods listening on different numbers",
	svc:  service(),
	slices: []*discoveryv1.EndpointSlice{
		slice("web-old", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{eport("http", 8080, corev1.ProtocolTCP)}, ep("10.244.1.5")),
		slice("web-new", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{eport("http", 9090, corev1.ProtocolTCP)}, ep("10.244.1.6")),
	},
	want: lines("vips 10.96.0.10", "-t 10.96.0.10:80 -s rr -> 10.244.1.5:8080 10.244.1.6:9090", "drain 30s"),
}, {
	name: "unnamed port of a single-port Service matches the slice's unnamed port",
	svc:  service(withPorts(corev1.ServicePort{Port: 80, TargetPort: intstr.FromInt32(8080)})),
	slices: []*discoveryv1.EndpointSlice{slice("web-1", discoveryv1.AddressTypeIPv4,
		[]discoveryv1.EndpointPort{{Port: ptr.To[int32](8080)}}, ep("10.244.1.5"))},
	want: lines("vips 10.96.0.10", "-t 10.96.0.10:80 -s rr -> 10.244.1.5:8080", "drain 30s"),
}, {
	name:   "a Service port no slice names: virtual server without real servers (connections refused at once)",
	svc:    service(withPorts(sport("http", 80, corev1.ProtocolTCP), sport("admin", 9000, corev1.ProtocolTCP))),
	slices: []*discoveryv1.EndpointSlice{v4("web-1", ep("10.244.1.5"))},
	want:   lines("vips 10.96.0.10", "-t 10.96.0.10:80 -s rr -> 10.244.1.5:8080", "-t 10.96.0.10:9000 -s rr ->", "drain 30s"),
}, {
	name: "endpoint in two slices counts once, with its most usable conditions",
	svc:  service(),
	slices: []*discoveryv1.EndpointSlice{
		v4("web-1", ep("10.244.1.5", notReady), ep("10.244.1.6")),
		v4("web-2", ep("10.244.1.5"), ep("10.244.1.6")),
	},
	want: lines("vips 10.96.0.10", "-t 10.96.0.10:80 -s rr -> 10.244.1.5:8080 10.244.1.6:8080", "drain 30s"),
}, {
	name:   "ready unset counts as ready; not-ready and terminating endpoints left out while any is ready",
	svc:    service(),
	slices: []*discoveryv1.EndpointSlice{v4("web-1", ep("10.244.1.5", readyUnset), ep("10.244.1.6", notReady), ep("10.244.1.7", servingTerminating))},
	want:   lines("vips 10.96.0.10", "-t 10.96.0.10:80 -s rr -> 10.244.1.5:8080", "drain 30s"),
}, {
	name:   "no ready endpoint: serving terminating ones are used, non-serving ones are not",
	svc:    service(),
	slices: []*discoveryv1.EndpointSlice{v4("web-1", ep("10.244.1.5", servingTerminating), ep("10.244.1.6", terminatingNotServing), ep("10.244.1.7", notReady))},
	want:   lines("vips 10.96.0.10", "-t 10.96.0.10:80 -s rr -> 10.244.1.5:8080", "drain 30s"),
}, {
	// publishNotReadyAddresses: ready is what counts, as for kube-proxy (upstream's "should create endpoints for
	// unready pods").
	name:   "ready terminating endpoints are used alongside ready ones, serving terminating ones are not",
	svc:    service(),
	slices: []*discoveryv1.EndpointSlice{v4("web-1", ep("10.244.1.5", readyTerminating), ep("10.244.1.6"), ep("10.244.1.7", servingTerminating))},
	want:   lines("vips 10.96.0.10", "-t 10.96.0.10:80 -s rr -> 10.244.1.5:8080 10.244.1.6:8080", "drain 30s"),
}, {
	name:   "internalTrafficPolicy Local keeps only this node's endpoints",
	svc:    service(func(s *corev1.Service) { s.Spec.InternalTrafficPolicy = trafficLocal }),
	slices: []*discoveryv1.EndpointSlice{v4("web-1", ep("10.244.1.5", onThisNode), ep("10.244.2.5"))},
	opts:   Options{NodeName: thisNode},
	want:   lines("vips 10.96.0.10", "-t 10.96.0.10:80 -s rr -> 10.244.1.5:8080", "drain 30s"),
}, {
	name:   "internalTrafficPolicy Local falls back to this node's terminating endpoints even if remote ones are ready",
	svc:    service(func(s *corev1.Service) { s.Spec.InternalTrafficPolicy = trafficLocal }),
	slices: []*discoveryv1.EndpointSlice{v4("web-1", ep("10.244.1.5", onThisNode, servingTerminating), ep("10.244.2.5"))},
	opts:   Options{NodeName: thisNode},
	want:   lines("vips 10.96.0.10", "-t 10.96.0.10:80 -s rr -> 10.244.1.5:8080", "drain 30s"),
}, {
	name:   "internalTrafficPolicy Local without local endpoints: no real servers",
	svc:    service(func(s *corev1.Service) { s.Spec.InternalTrafficPolicy = trafficLocal }),
	slices: []*discoveryv1.EndpointSlice{v4("web-1", ep("10.244.2.5"))},
	opts:   Options{NodeName: thisNode},
	want:   lines("vips 10.96.0.10", "-t 10.96.0.10:80 -s rr ->", "drain 30s"),
}, {
	name: "internalTrafficPolicy Cluster keeps every node's endpoints",
	svc: service(func(s *corev1.Service) {
		s.Spec.InternalTrafficPolicy = ptr.To(corev1.ServiceInternalTrafficPolicyCluster)
	}),
	slices: []*discoveryv1.EndpointSlice{v4("web-1", ep("10.244.1.5", onThisNode), ep("10.244.2.5"))},
	opts:   Options{NodeName: thisNode},
	want:   lines("vips 10.96.0.10", "-t 10.96.0.10:80 -s rr -> 10.244.1.5:8080 10.244.2.5:8080", "drain 30s"),
}, {
	name:   "sessionAffinity ClientIP without config: persistence 10800 s",
	svc:    service(func(s *corev1.Service) { s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP }),
	slices: []*discoveryv1.EndpointSlice{v4("web-1", ep("10.244.1.5"))},
	want:   lines("vips 10.96.0.10", "-t 10.96.0.10:80 -s rr -p 10800 -> 10.244.1.5:8080", "drain 30s"),
}, {
	name: "sessionAffinity ClientIP with timeoutSeconds",
	svc: service(func(s *corev1.Service) {
		s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
		s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr.To[int32](60)}}
	}),
	slices: []*discoveryv1.EndpointSlice{v4("web-1", ep("10.244.1.5"))},
	want:   lines("vips 10.96.0.10", "-t 10.96.0.10:80 -s rr -p 60 -> 10.244.1.5:8080", "drain 30s"),
}, {
	name:   "policy sets scheduler and drain timeout",
	svc:    service(),
	slices: []*discoveryv1.EndpointSlice{v4("web-1", ep("10.244.1.5"))},
	policy: &Policy{Scheduler: "lc", DrainTimeout: 2 * time.Minute},
	opts:   Options{DefaultScheduler: "wrr"},
	want:   lines("vips 10.96.0.10", "-t 10.96.0.10:80 -s lc -> 10.244.1.5:8080", "drain 2m0s"),
}, {
	name:   "policy without scheduler and drain 0: node default scheduler, delete at once",
	svc:    service(),
	slices: []*discoveryv1.EndpointSlice{v4("web-1", ep("10.244.1.5"))},
	policy: &Policy{},
	opts:   Options{DefaultScheduler: "wrr"},
	want:   lines("vips 10.96.0.10", "-t 10.96.0.10:80 -s wrr -> 10.244.1.5:8080", "drain 0s"),
}, {
	name:   "no policy: node default scheduler",
	svc:    service(),
	slices: []*discoveryv1.EndpointSlice{v4("web-1", ep("10.244.1.5"))},
	opts:   Options{DefaultScheduler: "sh"},
	want:   lines("vips 10.96.0.10", "-t 10.96.0.10:80 -s sh -> 10.244.1.5:8080", "drain 30s"),
}, {
	name: "FQDN and wrong-family slices, bad addresses, missing and zero ports are skipped",
	svc:  service(),
	slices: []*discoveryv1.EndpointSlice{
		nil,
		slice("web-fqdn", discoveryv1.AddressTypeFQDN, httpPort, ep("web.example.org")),
		slice("web-v6", discoveryv1.AddressTypeIPv6, httpPort, ep("fd00:244::5")),
		slice("web-noport", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{{Name: ptr.To("http")}}, ep("10.244.9.9")),
		slice("web-zero", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{eport("http", 0, corev1.ProtocolTCP)}, ep("10.244.9.8")),
		v4("web-1", ep("not-an-ip"), ep("fd00:244::6"), ep("fe80::1%eth0"), discoveryv1.Endpoint{}, ep("10.244.1.5")),
	},
	want: lines("vips 10.96.0.10", "-t 10.96.0.10:80 -s rr -> 10.244.1.5:8080", "drain 30s"),
}, {
	name: "IPv4-mapped IPv6 endpoint addresses are skipped (IPVS refuses them)",
	svc:  service(withClusterIPs("fd00::10")),
	slices: []*discoveryv1.EndpointSlice{
		slice("web-v6", discoveryv1.AddressTypeIPv6, httpPort, ep("::ffff:10.244.9.7"), ep("fd00:244::5")),
	},
	want: lines("vips fd00::10", "-t [fd00::10]:80 -s rr -> [fd00:244::5]:8080", "drain 30s"),
}, {
	// kube-proxy's EndpointSlice informer excludes this label; upstream's e2e
	// "Services should implement service.kubernetes.io/headless" adds it to a live slice.
	name: "a slice labelled service.kubernetes.io/headless is not proxied, whatever its value",
	svc:  service(func(s *corev1.Service) { s.Spec.Selector = nil }),
	slices: []*discoveryv1.EndpointSlice{
		func() *discoveryv1.EndpointSlice {
			es := v4("web-headless", discoveryv1.Endpoint{Addresses: []string{"192.0.2.10"}})
			es.Labels = map[string]string{corev1.IsHeadlessService: ""}
			return es
		}(),
		v4("web-manual", discoveryv1.Endpoint{Addresses: []string{"192.0.2.11"}}),
	},
	want: lines("vips 10.96.0.10", "-t 10.96.0.10:80 -s rr -> 192.0.2.11:8080", "drain 30s"),
}, {
	name:   "selector-less Service with a hand-made slice",
	svc:    service(func(s *corev1.Service) { s.Spec.Selector = nil }),
	slices: []*discoveryv1.EndpointSlice{v4("web-manual", discoveryv1.Endpoint{Addresses: []string{"192.0.2.10"}})},
	want:   lines("vips 10.96.0.10", "-t 10.96.0.10:80 -s rr -> 192.0.2.10:8080", "drain 30s"),
}}

func TestForService(t *testing.T) {
	for _, tt := range forServiceCases {
		t.Run(tt.name, func(t *testing.T) {
			st, err := ForService(tt.svc, tt.slices, tt.policy, tt.opts)
			if err != nil {
				t.Fatalf("ForService: %v", err)
			}
			if diff := cmp.Diff(tt.want, format(st)); diff != "" {
				t.Errorf("state (-want +got):\n%s", diff)
			}
			// Slice order must not matter.
			rev := slices.Clone(tt.slices)
			slices.Reverse(rev)
			again, _ := ForService(tt.svc, rev, tt.policy, tt.opts)
			if format(again) != format(st) {
				t.Errorf("state depends on slice order:\n%s\nvs\n%s", format(st), format(again))
			}
		})
	}
}

// forServiceInvalidCases are TestForServiceInvalid's table; FuzzForService starts from them too.
var forServiceInvalidCases = []struct {
	name   string
	svc    *corev1.Service
	policy *Policy
	field  string
}{
	{"clusterIP not an address", service(withClusterIPs("10.96.0.300")), nil, "spec.clusterIPs[0]"},
	{"two clusterIPs of one family", service(withClusterIPs("10.96.0.10", "10.96.0.11")), nil, "spec.clusterIPs[1]"},
	{"unsupported protocol", service(withPorts(sport("x", 80, "ICMP"))), nil, "spec.ports[0].protocol"},
	{"port out of range", service(withPorts(sport("x", 70000, corev1.ProtocolTCP))), nil, "spec.ports[0].port"},
	{"duplicate port and protocol", service(withPorts(sport("a", 80, corev1.ProtocolTCP), sport("b", 80, ""))), nil, "spec.ports[1]"},
	{"affinity timeout not positive", service(func(s *corev1.Service) {
		s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
		s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr.To[int32](0)}}
	}), nil, "spec.sessionAffinityConfig.clientIP.timeoutSeconds"},
	{"negative drain timeout", service(), &Policy{DrainTimeout: -time.Second}, "policy.drainTimeout"},
}

func TestForServiceInvalid(t *testing.T) {
	for _, tt := range forServiceInvalidCases {
		t.Run(tt.name, func(t *testing.T) {
			st, err := ForService(tt.svc, nil, tt.policy, Options{})
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
			var fe *field.Error
			if !errors.As(err, &fe) || fe.Field != tt.field {
				t.Errorf("err = %v, want a field.Error on %s", err, tt.field)
			}
			if !st.IsZero() {
				t.Errorf("state = %+v, want empty with an error", st)
			}
		})
	}
}

// An invalid Service outside the agent's scope is none of its business.
func TestForServiceOutOfScopeIsNeverInvalid(t *testing.T) {
	st, err := ForService(service(withLabels(nil), withClusterIPs("bogus")), nil, nil, Options{})
	if err != nil || !st.IsZero() {
		t.Errorf("ForService = %+v, %v; want empty, nil", st, err)
	}
}

func TestForServiceWeightsAndShape(t *testing.T) {
	st, err := ForService(service(withClusterIPs("10.96.0.10", "fd00::10")), []*discoveryv1.EndpointSlice{
		v4("a", ep("10.244.1.5"), ep("10.244.1.6")),
		slice("b", discoveryv1.AddressTypeIPv6, httpPort, ep("fd00:244::5")),
	}, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st.Servers {
		if !slices.Contains(st.VIPs, s.Address) {
			t.Errorf("server %s is not on one of the VIPs %v", s.ServiceKey, st.VIPs)
		}
		for _, d := range s.Destinations {
			if d.Weight != 1 {
				t.Errorf("%s %s weight %d, want 1", s.ServiceKey, d.DestinationKey, d.Weight)
			}
			if d.Address.Is4() != s.Address.Is4() {
				t.Errorf("%s has real server %s of the other family", s.ServiceKey, d.DestinationKey)
			}
		}
	}
	if st.DrainTimeoutFor(ipvs.UDP) != 0 || st.DrainTimeoutFor(ipvs.TCP) != DefaultDrainTimeout {
		t.Errorf("drain timeouts TCP %v UDP %v", st.DrainTimeoutFor(ipvs.TCP), st.DrainTimeoutFor(ipvs.UDP))
	}
}
