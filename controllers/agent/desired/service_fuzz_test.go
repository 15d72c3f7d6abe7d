package desired

import (
	"errors"
	"math"
	"net/netip"
	"reflect"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
	"github.com/ipvs-operator/ipvs-operator/ipvs/plan"
)

// FuzzForService starts from one of TestForService's or TestForServiceInvalid's cases (base) and edits the
// Service, its EndpointSlices, the policy and the options with the fuzzer's bytes (edits): ClusterIPs of
// both families and malformed ones, ports by number and name, protocols, target ports, endpoint conditions,
// node names, internalTrafficPolicy, session affinity timeouts. It checks that ForService:
//
//   - returns either an error matching ErrInvalid (with a *field.Error) and an empty State, or a State that
//     passes the sync engine's contract (plan.Desired.Validate), in Desired's documented order, with one
//     virtual server per (VIP, port), real servers of weight 1, a scheduler, whole-second persistence
//     exactly for ClientIP affinity, and a drain timeout >= 0;
//   - gives an empty State, without error, for a Service out of scope or of type ExternalName;
//   - is deterministic, does not depend on the order of the slices, and leaves its inputs alone.
func FuzzForService(f *testing.F) {
	for i := range len(forServiceCases) + len(forServiceInvalidCases) {
		f.Add(uint8(i), []byte(nil))
	}
	// Edit scripts reaching what the table does not: a dual-stack multi-port Service with named and numeric
	// target ports, endpoints in several slices with mixed conditions, local traffic, affinity.
	f.Add(uint8(0), []byte{0, 4, 1, 1, 1, 1, 0, 7, 1, 8, 1, 2, 5, 1, 9, 1, 3, 13, 2, 9, 0, 5, 10, 2, 6, 1, 12, 1, 0, 0, 5, 3, 4})
	f.Add(uint8(len(forServiceCases)+len(forServiceInvalidCases)), []byte{1, 2, 2, 1, 0, 7, 0, 8, 0, 3, 2, 2, 9, 0, 1, 0, 2, 9, 0, 1, 7, 1, 11, 3})

	f.Fuzz(func(t *testing.T, base uint8, edits []byte) {
		in := fuzzForServiceInput(base, edits)
		orig := in.deepCopy()
		st, err := ForService(in.svc, in.slices, in.policy, in.opts)
		if !reflect.DeepEqual(in, orig) {
			t.Fatal("ForService modified its input")
		}
		again, errAgain := ForService(in.svc, in.slices, in.policy, in.opts)
		if !reflect.DeepEqual(st, again) || (err == nil) != (errAgain == nil) {
			t.Fatalf("ForService is not deterministic: %+v, %v\nvs %+v, %v", st, err, again, errAgain)
		}
		rev := slices.Clone(in.slices)
		slices.Reverse(rev)
		if revSt, _ := ForService(in.svc, rev, in.policy, in.opts); !reflect.DeepEqual(st, revSt) {
			t.Fatalf("State depends on the order of the slices:\n%s\nvs\n%s", format(st), format(revSt))
		}

		if err != nil {
			var fe *field.Error
			if !errors.Is(err, ErrInvalid) || !errors.As(err, &fe) {
				t.Fatalf("error %v does not match ErrInvalid with a *field.Error", err)
			}
			if !st.IsZero() {
				t.Fatalf("State %+v returned with error %v", st, err)
			}
			return
		}
		checkState(t, in, st)
	})
}

// checkState checks a State ForService returned without error.
func checkState(t *testing.T, in forServiceInput, st State) {
	t.Helper()
	if err := st.Validate(); err != nil {
		t.Fatalf("State breaks the sync engine's contract: %v\n%s", err, format(st))
	}
	if in.svc == nil || !InScope(in.svc, in.opts.ManageAll) || in.svc.Spec.Type == corev1.ServiceTypeExternalName {
		if !st.IsZero() || st.DrainTimeout != 0 {
			t.Fatalf("State for a Service that is gone, out of scope or ExternalName: %+v", st)
		}
		return
	}
	if (len(st.VIPs) == 0) != (len(st.Servers) == 0) {
		t.Fatalf("VIPs without virtual servers or the reverse:\n%s", format(st))
	}
	if len(st.Servers) != len(st.VIPs)*len(in.svc.Spec.Ports) {
		t.Fatalf("%d virtual servers for %d VIPs and %d ports", len(st.Servers), len(st.VIPs), len(in.svc.Spec.Ports))
	}
	if !isStrictlySorted(st.VIPs, netip.Addr.Compare) ||
		!isStrictlySorted(st.Servers, func(a, b ipvs.VirtualServer) int { return plan.CompareServiceKeys(a.ServiceKey, b.ServiceKey) }) {
		t.Fatalf("VIPs or virtual servers not in Desired's order:\n%s", format(st))
	}
	affinity := in.svc.Spec.SessionAffinity == corev1.ServiceAffinityClientIP
	for _, s := range st.Servers {
		if s.Scheduler == "" || (s.Persistence > 0) != affinity || s.Persistence%time.Second != 0 {
			t.Fatalf("%s: scheduler %q, persistence %v (ClientIP affinity %v)", s.ServiceKey, s.Scheduler, s.Persistence, affinity)
		}
		if !isStrictlySorted(s.Destinations, func(a, b ipvs.Destination) int {
			return plan.CompareDestinationKeys(a.DestinationKey, b.DestinationKey)
		}) {
			t.Fatalf("%s: real servers not sorted: %v", s.ServiceKey, s.Destinations)
		}
		for _, d := range s.Destinations {
			if d.Weight != 1 {
				t.Fatalf("%s: real server %s has weight %d", s.ServiceKey, d.DestinationKey, d.Weight)
			}
		}
	}
	if st.DrainTimeout < 0 {
		t.Fatalf("negative drain timeout %v", st.DrainTimeout)
	}
}

func isStrictlySorted[T any](s []T, cmp func(a, b T) int) bool {
	for i := 1; i < len(s); i++ {
		if cmp(s[i-1], s[i]) >= 0 {
			return false
		}
	}
	return true
}

// forServiceInput is one call of ForService.
type forServiceInput struct {
	svc    *corev1.Service
	slices []*discoveryv1.EndpointSlice
	policy *Policy
	opts   Options
}

func (in forServiceInput) deepCopy() forServiceInput {
	out := in
	out.svc = in.svc.DeepCopy()
	if in.slices != nil {
		out.slices = make([]*discoveryv1.EndpointSlice, len(in.slices))
		for i, es := range in.slices {
			out.slices[i] = es.DeepCopy()
		}
	}
	if in.policy != nil {
		p := *in.policy
		out.policy = &p
	}
	return out
}

// The fuzzer picks values from these sets: the valid and invalid values the API allows or a hand-made
// object might hold, including every value the table uses, so edits meet on the same ports and endpoints.
var (
	fuzzClusterIPs = [][]string{
		nil, {"None"}, {"10.96.0.10"}, {"fd00::10"}, {"10.96.0.10", "fd00::10"}, {"fd00::10", "10.96.0.10"},
		{"10.96.0.10", "10.96.0.11"}, {"10.96.0.300"}, {"::ffff:10.96.0.10"}, {"fe80::1%eth0"}, {""},
		{"10.96.0.10", ""}, {"None", "fd00::10"}, {"10.96.0.10", "fd00::10", "10.96.0.12"},
	}
	fuzzPortNames       = []string{"", "http", "dns", "dns-tcp", "sig"}
	fuzzServicePorts    = []int32{80, 53, 2905, 9000, 0, 70000, -1}
	fuzzProtocols       = []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP, "", "ICMP"}
	fuzzTargetPorts     = []intstr.IntOrString{intstr.FromString("http"), intstr.FromInt32(8080), intstr.FromInt32(0), intstr.FromString("dns")}
	fuzzServiceTypes    = []corev1.ServiceType{corev1.ServiceTypeClusterIP, corev1.ServiceTypeNodePort, corev1.ServiceTypeLoadBalancer, corev1.ServiceTypeExternalName, ""}
	fuzzLabels          = []map[string]string{{ProxyNameLabel: ProxyName}, nil, {ProxyNameLabel: "other-proxy"}, {ProxyNameLabel: ""}}
	fuzzAffinityTimeout = []*int32{nil, ptr.To[int32](0), ptr.To[int32](-5), ptr.To[int32](1), ptr.To[int32](60), ptr.To[int32](10800), ptr.To[int32](86400), ptr.To[int32](math.MaxInt32)}
	fuzzTrafficPolicies = []*corev1.ServiceInternalTrafficPolicy{nil, trafficLocal, ptr.To(corev1.ServiceInternalTrafficPolicyCluster), ptr.To[corev1.ServiceInternalTrafficPolicy]("Bogus")}
	fuzzAddressTypes    = []discoveryv1.AddressType{discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6, discoveryv1.AddressTypeFQDN, ""}
	fuzzSlicePortNames  = []*string{nil, ptr.To(""), ptr.To("http"), ptr.To("dns"), ptr.To("dns-tcp"), ptr.To("sig")}
	fuzzSlicePorts      = []*int32{nil, ptr.To[int32](0), ptr.To[int32](8080), ptr.To[int32](5353), ptr.To[int32](1053), ptr.To[int32](3905), ptr.To[int32](70000), ptr.To[int32](-1)}
	fuzzSliceProtocols  = []*corev1.Protocol{nil, ptr.To(corev1.ProtocolTCP), ptr.To(corev1.ProtocolUDP), ptr.To(corev1.ProtocolSCTP)}
	fuzzEndpointAddrs   = []string{"10.244.1.5", "10.244.1.6", "10.244.2.5", "fd00:244::5", "fd00:244::6", "::ffff:10.244.9.7",
		"fe80::1%eth0", "not-an-ip", "192.0.2.10", "web.example.org"}
	fuzzNodeNames  = []*string{nil, ptr.To(thisNode), ptr.To("node-b"), ptr.To("")}
	fuzzConditions = []*bool{nil, ptr.To(true), ptr.To(false)}
	fuzzPolicies   = []*Policy{nil, {}, {Scheduler: "lc", DrainTimeout: 2 * time.Minute}, {Scheduler: "sh"}, {DrainTimeout: -time.Second}, {Scheduler: "wrr", DrainTimeout: DefaultDrainTimeout}}
	fuzzSchedulers = []string{"", "wrr", "sh"}
)

// fuzzBytes hands out the fuzzer's bytes one choice at a time; past the end every choice is 0.
type fuzzBytes []byte

func (b *fuzzBytes) next() byte {
	if len(*b) == 0 {
		return 0
	}
	c := (*b)[0]
	*b = (*b)[1:]
	return c
}

func (b *fuzzBytes) index(n int) int { return int(b.next()) % n }

func pick[T any](b *fuzzBytes, from []T) T { return from[b.index(len(from))] }

// fuzzForServiceInput is a table case (valid ones, then invalid ones, then a plain Service) changed by edits.
func fuzzForServiceInput(base uint8, edits []byte) forServiceInput {
	var in forServiceInput
	switch i := int(base) % (len(forServiceCases) + len(forServiceInvalidCases) + 1); {
	case i < len(forServiceCases):
		c := forServiceCases[i]
		in = forServiceInput{svc: c.svc, slices: c.slices, policy: c.policy, opts: c.opts}.deepCopy()
	case i < len(forServiceCases)+len(forServiceInvalidCases):
		c := forServiceInvalidCases[i-len(forServiceCases)]
		in = forServiceInput{svc: c.svc, policy: c.policy}.deepCopy()
	default:
		in.svc = service()
	}
	b := fuzzBytes(edits)
	svc := func() *corev1.Service {
		if in.svc == nil {
			in.svc = service()
		}
		return in.svc
	}
	sliceAt := func() *discoveryv1.EndpointSlice {
		if len(in.slices) == 0 {
			return nil
		}
		return in.slices[b.index(len(in.slices))]
	}
	for len(b) > 0 {
		switch b.next() % 15 {
		case 0:
			ips := slices.Clone(pick(&b, fuzzClusterIPs))
			withClusterIPs(ips...)(svc())
		case 1: // the singular field only, as objects from before dual-stack
			s := svc()
			s.Spec.ClusterIPs, s.Spec.ClusterIP = nil, ""
			if ips := pick(&b, fuzzClusterIPs); len(ips) > 0 {
				s.Spec.ClusterIP = ips[0]
			}
		case 2:
			s := svc()
			s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: pick(&b, fuzzPortNames), Port: pick(&b, fuzzServicePorts),
				Protocol: pick(&b, fuzzProtocols), TargetPort: pick(&b, fuzzTargetPorts)})
		case 3:
			if s := svc(); len(s.Spec.Ports) > 0 {
				i := b.index(len(s.Spec.Ports))
				s.Spec.Ports = slices.Delete(s.Spec.Ports, i, i+1)
			}
		case 4:
			svc().Spec.Type = pick(&b, fuzzServiceTypes)
		case 5:
			svc().Labels = pick(&b, fuzzLabels)
		case 6:
			s := svc()
			s.Spec.SessionAffinity, s.Spec.SessionAffinityConfig = corev1.ServiceAffinityNone, nil
			switch b.next() % 4 {
			case 1:
				s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
			case 2:
				s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
				s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{}
			case 3:
				s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
				s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: pick(&b, fuzzAffinityTimeout)}}
			}
		case 7:
			svc().Spec.InternalTrafficPolicy = pick(&b, fuzzTrafficPolicies)
		case 8:
			if b.next()%8 == 0 {
				in.slices = append(in.slices, nil)
				break
			}
			in.slices = append(in.slices, slice("web-fuzz", pick(&b, fuzzAddressTypes), nil))
		case 9:
			if es := sliceAt(); es != nil {
				es.Ports = append(es.Ports, discoveryv1.EndpointPort{Name: pick(&b, fuzzSlicePortNames), Port: pick(&b, fuzzSlicePorts), Protocol: pick(&b, fuzzSliceProtocols)})
			}
		case 10:
			if es := sliceAt(); es != nil {
				e := discoveryv1.Endpoint{NodeName: pick(&b, fuzzNodeNames)}
				switch n := b.next() % 4; n {
				case 0: // no address at all
				default:
					for range n {
						e.Addresses = append(e.Addresses, pick(&b, fuzzEndpointAddrs))
					}
				}
				e.Conditions = fuzzEndpointConditions(&b)
				es.Endpoints = append(es.Endpoints, e)
			}
		case 11:
			if es := sliceAt(); es != nil && len(es.Endpoints) > 0 {
				e := &es.Endpoints[b.index(len(es.Endpoints))]
				e.Conditions, e.NodeName = fuzzEndpointConditions(&b), pick(&b, fuzzNodeNames)
			}
		case 12:
			if len(in.slices) > 0 {
				i := b.index(len(in.slices))
				in.slices = slices.Delete(in.slices, i, i+1)
			}
		case 13:
			if p := pick(&b, fuzzPolicies); p != nil {
				c := *p
				in.policy = &c
			} else {
				in.policy = nil
			}
		case 14:
			in.opts = Options{NodeName: *pick(&b, []*string{ptr.To(""), ptr.To(thisNode)}), ManageAll: b.next()%2 == 1, DefaultScheduler: pick(&b, fuzzSchedulers)}
		}
	}
	return in
}

func fuzzEndpointConditions(b *fuzzBytes) discoveryv1.EndpointConditions {
	c := int(b.next())
	return discoveryv1.EndpointConditions{
		Ready:       fuzzConditions[c%3],
		Serving:     fuzzConditions[c/3%3],
		Terminating: fuzzConditions[c/9%3],
	}
}
