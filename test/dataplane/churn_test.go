package dataplane

import (
	"reflect"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	lbv1alpha1 "github.com/ipvs-operator/ipvs-operator/api/v1alpha1"
	"github.com/ipvs-operator/ipvs-operator/ipvs"
)

// Pure tests of the churn test's oracle and step generator: no cluster.

func oracleSvc(name, ip string, mutate func(*corev1.Service), ports ...corev1.ServicePort) corev1.Service {
	s := corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, Labels: map[string]string{
			lbv1alpha1.ServiceProxyNameLabel: lbv1alpha1.ServiceProxyName, "tier": "web"}},
		Spec: corev1.ServiceSpec{ClusterIP: ip, ClusterIPs: []string{ip}, Ports: ports},
	}
	if mutate != nil {
		mutate(&s)
	}
	return s
}

type oracleEP struct {
	addr                        string
	ready, serving, terminating *bool
	node                        string
}

func oracleSlice(name, service string, ports []discoveryv1.EndpointPort, eps ...oracleEP) discoveryv1.EndpointSlice {
	es := discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "ns", Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: service}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       ports,
	}
	for _, e := range eps {
		ep := discoveryv1.Endpoint{Addresses: []string{e.addr}, Conditions: discoveryv1.EndpointConditions{Ready: e.ready, Serving: e.serving, Terminating: e.terminating}}
		if e.node != "" {
			ep.NodeName = ptr.To(e.node)
		}
		es.Endpoints = append(es.Endpoints, ep)
	}
	return es
}

func slicePort(name string, port int32, proto corev1.Protocol) discoveryv1.EndpointPort {
	return discoveryv1.EndpointPort{Name: ptr.To(name), Port: ptr.To(port), Protocol: ptr.To(proto)}
}

func oraclePolicy(name string, created time.Time, sched lbv1alpha1.Scheduler, sel *metav1.LabelSelector) lbv1alpha1.ServicePolicy {
	return lbv1alpha1.ServicePolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, CreationTimestamp: metav1.NewTime(created)},
		Spec:       lbv1alpha1.ServicePolicySpec{Selector: sel, Scheduler: sched},
	}
}

func TestOracleView(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	web := &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "web"}}
	yes, no := ptr.To(true), ptr.To(false)
	http := []discoveryv1.EndpointPort{slicePort("http", 8080, corev1.ProtocolTCP)}
	tcp80 := svcPort("http", 80, intstrZero, corev1.ProtocolTCP)

	tests := []struct {
		name  string
		world churnWorld
		node  string
		want  nodeView
	}{{
		name: "out of scope, ExternalName and headless Services show nothing",
		world: churnWorld{Services: []corev1.Service{
			oracleSvc("other", "10.96.0.1", func(s *corev1.Service) { s.Labels[lbv1alpha1.ServiceProxyNameLabel] = "kube-proxy" }, tcp80),
			oracleSvc("unlabelled", "10.96.0.2", func(s *corev1.Service) { delete(s.Labels, lbv1alpha1.ServiceProxyNameLabel) }, tcp80),
			oracleSvc("ext", "", func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeExternalName; s.Spec.ClusterIPs = nil }),
			oracleSvc("headless", corev1.ClusterIPNone, nil, tcp80),
		}},
		want: nodeView{},
	}, {
		name: "in scope all, an unlabelled Service is served and one labelled for another proxy is not",
		world: churnWorld{ScopeAll: true, Services: []corev1.Service{
			oracleSvc("other", "10.96.0.1", func(s *corev1.Service) { s.Labels[lbv1alpha1.ServiceProxyNameLabel] = "kube-proxy" }, tcp80),
			oracleSvc("unlabelled", "10.96.0.2", func(s *corev1.Service) { delete(s.Labels, lbv1alpha1.ServiceProxyNameLabel) }, tcp80),
		}},
		want: nodeView{Lines: []string{"-A -t 10.96.0.2:80 -s rr"}, VIPs: []string{"10.96.0.2"}},
	}, {
		name: "ready endpoints at the slice's port for the Service port's name; rr by default; a Service without endpoints is still served",
		world: churnWorld{
			Services: []corev1.Service{oracleSvc("web", "10.96.0.10", nil, tcp80), oracleSvc("empty", "10.96.0.11", nil, tcp80)},
			Slices: []discoveryv1.EndpointSlice{
				oracleSlice("web-1", "web", http, oracleEP{addr: "10.244.1.2"}, oracleEP{addr: "10.244.2.2", ready: yes}, oracleEP{addr: "10.244.2.3", ready: no}),
				// The same endpoint listed by two slices counts once.
				oracleSlice("web-2", "web", http, oracleEP{addr: "10.244.1.2", ready: yes}),
				// Another family and another Service's slice are not this one's.
				oracleSlice("other", "empty2", http, oracleEP{addr: "10.244.1.9"}),
			},
		},
		want: nodeView{
			Lines: []string{
				"-A -t 10.96.0.10:80 -s rr",
				"-A -t 10.96.0.11:80 -s rr",
				"-a -t 10.96.0.10:80 -r 10.244.1.2:8080",
				"-a -t 10.96.0.10:80 -r 10.244.2.2:8080",
			},
			VIPs: []string{"10.96.0.10", "10.96.0.11"},
		},
	}, {
		name: "TCP and UDP on one port number resolve through their own slice ports; ClientIP affinity is persistence",
		world: churnWorld{
			Services: []corev1.Service{oracleSvc("dns", "10.96.0.53", func(s *corev1.Service) {
				s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
			}, svcPort("dns", 53, intstrZero, corev1.ProtocolUDP), svcPort("dns-tcp", 53, intstrZero, corev1.ProtocolTCP))},
			Slices: []discoveryv1.EndpointSlice{oracleSlice("dns-1", "dns",
				[]discoveryv1.EndpointPort{slicePort("dns", 5353, corev1.ProtocolUDP), slicePort("dns-tcp", 8080, corev1.ProtocolTCP)},
				oracleEP{addr: "10.244.1.2"})},
		},
		want: nodeView{
			Lines: []string{
				"-A -t 10.96.0.53:53 -s rr -p 10800",
				"-A -u 10.96.0.53:53 -s rr -p 10800",
				"-a -t 10.96.0.53:53 -r 10.244.1.2:8080",
				"-a -u 10.96.0.53:53 -r 10.244.1.2:5353",
			},
			VIPs: []string{"10.96.0.53"},
		},
	}, {
		name: "no ready endpoint: the serving-and-terminating ones; not serving ones never",
		world: churnWorld{
			Services: []corev1.Service{oracleSvc("web", "10.96.0.10", func(s *corev1.Service) {
				s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
				s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr.To[int32](60)}}
			}, tcp80)},
			Slices: []discoveryv1.EndpointSlice{oracleSlice("web-1", "web", http,
				oracleEP{addr: "10.244.1.2", ready: no, serving: yes, terminating: yes},
				oracleEP{addr: "10.244.1.3", ready: no, serving: no, terminating: yes},
				oracleEP{addr: "10.244.1.4", ready: no})},
		},
		want: nodeView{
			Lines: []string{"-A -t 10.96.0.10:80 -s rr -p 60", "-a -t 10.96.0.10:80 -r 10.244.1.2:8080"},
			VIPs:  []string{"10.96.0.10"},
		},
	}, {
		name: "internalTrafficPolicy Local keeps this node's endpoints, and falls back among them only",
		node: "node-a",
		world: churnWorld{
			Services: []corev1.Service{
				oracleSvc("local", "10.96.0.10", func(s *corev1.Service) {
					s.Spec.InternalTrafficPolicy = ptr.To(corev1.ServiceInternalTrafficPolicyLocal)
				}, tcp80),
			},
			Slices: []discoveryv1.EndpointSlice{oracleSlice("local-1", "local", http,
				oracleEP{addr: "10.244.2.2", node: "node-b"},
				oracleEP{addr: "10.244.1.2", node: "node-a", ready: no, serving: yes, terminating: yes},
				oracleEP{addr: "10.244.1.3"})},
		},
		want: nodeView{
			Lines: []string{"-A -t 10.96.0.10:80 -s rr", "-a -t 10.96.0.10:80 -r 10.244.1.2:8080"},
			VIPs:  []string{"10.96.0.10"},
		},
	}, {
		name: "the oldest matching policy wins (same second: smaller name); an invalid selector selects nothing",
		world: churnWorld{
			Services: []corev1.Service{oracleSvc("web", "10.96.0.10", nil, tcp80)},
			Policies: []lbv1alpha1.ServicePolicy{
				oraclePolicy("newer", t0.Add(time.Second), lbv1alpha1.SchedulerLeastConnection, web),
				oraclePolicy("b-same", t0, lbv1alpha1.SchedulerSourceHashing, web),
				oraclePolicy("a-same", t0, lbv1alpha1.SchedulerWeightedRoundRobin, web),
				oraclePolicy("broken", t0.Add(-time.Hour), lbv1alpha1.SchedulerMaglevHashing, &metav1.LabelSelector{
					MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "tier", Operator: "Bogus"}}}),
				oraclePolicy("elsewhere", t0.Add(-time.Hour), lbv1alpha1.SchedulerNeverQueue, &metav1.LabelSelector{
					MatchLabels: map[string]string{"tier": "db"}}),
			},
		},
		want: nodeView{Lines: []string{"-A -t 10.96.0.10:80 -s wrr"}, VIPs: []string{"10.96.0.10"}},
	}, {
		name: "a Service port the slice does not list has no real servers",
		world: churnWorld{
			Services: []corev1.Service{oracleSvc("two", "10.96.0.10", nil, tcp80, svcPort("https", 443, intstrZero, corev1.ProtocolTCP))},
			Slices:   []discoveryv1.EndpointSlice{oracleSlice("two-1", "two", http, oracleEP{addr: "10.244.1.2"})},
		},
		want: nodeView{
			Lines: []string{"-A -t 10.96.0.10:443 -s rr", "-A -t 10.96.0.10:80 -s rr", "-a -t 10.96.0.10:80 -r 10.244.1.2:8080"},
			VIPs:  []string{"10.96.0.10"},
		},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			node := tc.node
			if node == "" {
				node = "node-b"
			}
			got := oracleView(tc.world, node)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("oracleView:\n got %#v\nwant %#v", got, tc.want)
			}
		})
	}
}

func TestViewOfKernel(t *testing.T) {
	save := `-A -t 10.96.0.10:80 -s rr -p 600
-a -t 10.96.0.10:80 -r 10.244.1.2:8080 -m -w 1
-a -t 10.96.0.10:80 -r 10.244.1.3:8080 -m -w 0
-A -u 10.96.0.10:53 -s sh
-A -t 10.96.0.1:443 -s rr
-a -t 10.96.0.1:443 -r 10.0.2.100:6443 -m -w 1
`
	table, err := ipvs.ParseSave(save)
	if err != nil {
		t.Fatal(err)
	}
	addrs := "5: ipvs0    inet 10.96.0.10/32 scope global ipvs0\\       valid_lft forever\n5: ipvs0    inet 10.96.0.1/32 scope global ipvs0\n"
	got := viewOfKernel(table, addrs, map[string]bool{"10.96.0.10": true, "10.96.0.99": true})
	want := kernelView{
		nodeView: nodeView{
			Lines: []string{"-A -t 10.96.0.10:80 -s rr -p 600", "-A -u 10.96.0.10:53 -s sh", "-a -t 10.96.0.10:80 -r 10.244.1.2:8080"},
			VIPs:  []string{"10.96.0.10"},
		},
		Draining: []string{"-a -t 10.96.0.10:80 -r 10.244.1.3:8080"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("viewOfKernel:\n got %#v\nwant %#v", got, want)
	}

	// A desired real server left at weight 0 is missing; a deleted Service's virtual server is unexpected.
	oracle := nodeView{
		Lines: []string{"-A -t 10.96.0.10:80 -s rr -p 600", "-a -t 10.96.0.10:80 -r 10.244.1.2:8080", "-a -t 10.96.0.10:80 -r 10.244.1.3:8080"},
		VIPs:  []string{"10.96.0.10"},
	}
	wantDiff := []string{"missing line: -a -t 10.96.0.10:80 -r 10.244.1.3:8080", "unexpected line: -A -u 10.96.0.10:53 -s sh"}
	if d := viewDiff(oracle, got.nodeView); !reflect.DeepEqual(d, wantDiff) {
		t.Errorf("viewDiff = %q, want %q", d, wantDiff)
	}
	if d := viewDiff(got.nodeView, got.nodeView); d != nil {
		t.Errorf("viewDiff of equal views = %q", d)
	}
}

func TestGenerateChurnIsReplayable(t *testing.T) {
	a, b := generateChurn(42, 300, 2), generateChurn(42, 300, 2)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("the same seed gave two sequences")
	}
	if reflect.DeepEqual(a, generateChurn(43, 300, 2)) {
		t.Fatal("two seeds gave the same sequence")
	}
	if short := generateChurn(42, 30, 2); !reflect.DeepEqual(short, a[:30]) {
		t.Fatal("a short run is not the prefix of the long one with the same seed")
	}
}

// TestGenerateChurnStaysInThePool replays many sequences on a model of its own and checks that every step
// is one the cluster can take: the pool's limits, targets that exist, Service shapes the API server accepts,
// and that 300 steps exercise every kind.
func TestGenerateChurnStaysInThePool(t *testing.T) {
	for seed := int64(1); seed <= 50; seed++ {
		kinds := map[stepKind]int{}
		services, policies := map[string]bool{}, map[string]bool{}
		for i, st := range generateChurn(seed, 300, 2) {
			kinds[st.Kind]++
			fail := func(format string, args ...any) {
				t.Helper()
				t.Fatalf("seed %d step %d %s: "+format, append([]any{seed, i + 1, st}, args...)...)
			}
			switch st.Kind {
			case stepCreateService:
				if services[st.Target] {
					fail("created twice")
				}
				services[st.Target] = true
			case stepEditService, stepEditSlice:
				if !services[st.Target] {
					fail("no such Service")
				}
			case stepDeleteService:
				if !services[st.Target] {
					fail("no such Service")
				}
				delete(services, st.Target)
			case stepCreatePolicy, stepConflictPolicy:
				policies[st.Target] = true
			case stepEditPolicy, stepDeletePolicy:
				if !policies[st.Target] {
					fail("no such policy")
				}
				if st.Kind == stepDeletePolicy {
					delete(policies, st.Target)
				}
			case stepScale:
				if st.Replicas < 0 || st.Replicas > churnMaxReplicas {
					fail("replicas out of the pool")
				}
			}
			if len(services) > churnMaxServices || len(policies) > churnMaxPolicies {
				fail("pool too big: %d Services, %d policies", len(services), len(policies))
			}
			if st.Kind.drift() || st.Kind == stepRestartAgent {
				if st.Node < 0 || st.Node > 1 {
					fail("node out of range")
				}
			}
			if s := st.Service; s != nil {
				if len(s.Ports) == 0 || len(s.Ports) > 3 {
					fail("%d ports", len(s.Ports))
				}
				names := map[string]bool{}
				type pp struct {
					port  int32
					proto corev1.Protocol
				}
				numbers := map[pp]bool{}
				for _, p := range s.Ports {
					if names[p.Name] || numbers[pp{p.Port, p.Proto}] {
						fail("duplicate port name or number: %v", s.Ports)
					}
					names[p.Name], numbers[pp{p.Port, p.Proto}] = true, true
				}
			}
			for _, e := range st.Slice {
				if e.Node < -1 || e.Node > 1 {
					fail("endpoint node out of range")
				}
			}
		}
		if seed == 1 {
			for _, w := range churnWeights {
				if kinds[w.kind] == 0 {
					t.Errorf("300 steps of seed 1 never %s: %v", w.kind, kinds)
				}
			}
		}
	}
}

// A step's Service shape is a copy: a later edit of the same Service does not rewrite what an earlier step
// said. Generating a prefix ends the model's life right after its last step, so that step is as generated.
func TestGenerateChurnStepsDoNotAlias(t *testing.T) {
	full := generateChurn(7, 80, 2)
	for k := 1; k <= len(full); k++ {
		prefix := generateChurn(7, k, 2)
		if got, want := full[k-1].String(), prefix[k-1].String(); got != want {
			t.Fatalf("step %d changed after generation:\n now %s\n was %s", k, got, want)
		}
	}
	if !slices.ContainsFunc(full, func(s churnStep) bool { return s.Kind == stepEditService }) {
		t.Fatal("no edit to check")
	}
}

var intstrZero = intstr.FromInt32(0)
