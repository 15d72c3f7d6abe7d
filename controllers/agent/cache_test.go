package agent_test

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ipvs-operator/ipvs-operator/controllers/agent"
	"github.com/ipvs-operator/ipvs-operator/controllers/agent/desired"
)

// equateIPs lets cmp compare netip values (desired.State and pod CIDRs are made of them).
var equateIPs = cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})

// transformed runs transform twice (client-go may hand it an object it already transformed) and checks the
// second run changes nothing.
func transformed[T any](t *testing.T, transform func(any) (any, error), in T) T {
	t.Helper()
	once, err := transform(in)
	if err != nil {
		t.Fatalf("transform: %v", err)
	}
	twice, err := transform(once)
	if err != nil {
		t.Fatalf("transform again: %v", err)
	}
	if d := cmp.Diff(once, twice); d != "" {
		t.Errorf("transform is not idempotent (-once +twice):\n%s", d)
	}
	out, ok := once.(T)
	if !ok {
		t.Fatalf("transform returned %T, want %T", once, in)
	}
	return out
}

// identity is what every transformed object keeps for the cache to work: key, UID, resourceVersion.
func checkIdentity(t *testing.T, in, out metav1.Object) {
	t.Helper()
	if out.GetName() != in.GetName() || out.GetNamespace() != in.GetNamespace() || out.GetUID() != in.GetUID() ||
		out.GetResourceVersion() != in.GetResourceVersion() || out.GetGeneration() != in.GetGeneration() ||
		!out.GetDeletionTimestamp().Equal(in.GetDeletionTimestamp()) {
		t.Errorf("identity changed: %s/%s uid %s rv %s gen %d del %v", out.GetNamespace(), out.GetName(), out.GetUID(),
			out.GetResourceVersion(), out.GetGeneration(), out.GetDeletionTimestamp())
	}
	if out.GetManagedFields() != nil || out.GetOwnerReferences() != nil || out.GetGenerateName() != "" {
		t.Errorf("managedFields/ownerReferences/generateName kept: %v %v %q", out.GetManagedFields(), out.GetOwnerReferences(), out.GetGenerateName())
	}
}

func TestCacheOptionsTransformEveryWatchedKind(t *testing.T) {
	opts := agent.CacheOptions()
	if opts.DefaultTransform == nil {
		t.Error("no DefaultTransform: ServicePolicies would keep their managedFields")
	}
	for _, o := range []client.Object{&corev1.Node{}, &corev1.Service{}, &discoveryv1.EndpointSlice{}} {
		found := false
		for k, v := range opts.ByObject {
			if cmp.Equal(k, o) && v.Transform != nil {
				found = true
			}
		}
		if !found {
			t.Errorf("no transform for %T", o)
		}
	}
	// Objects the transforms do not know pass unchanged.
	other := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "x", Annotations: map[string]string{"a": "b"}}}
	for _, tf := range []func(any) (any, error){agent.TransformNode, agent.TransformService, agent.TransformEndpointSlice} {
		if got, err := tf(other); err != nil || got != any(other) {
			t.Errorf("a ConfigMap came back as %v, %v", got, err)
		}
	}
}

func TestTransformNode(t *testing.T) {
	for name, node := range map[string]*corev1.Node{
		"as the kubelet keeps it": apiNode(7),
		"only the legacy podCIDR": func() *corev1.Node { n := apiNode(8); n.Spec.PodCIDRs = nil; return n }(),
		"no pod CIDR yet":         func() *corev1.Node { n := apiNode(9); n.Spec.PodCIDR, n.Spec.PodCIDRs = "", nil; return n }(),
		"dual-stack, being deleted": func() *corev1.Node {
			n := apiNode(10)
			n.Spec.PodCIDRs = []string{"10.244.10.0/24", "fd00:10:244:a::/64"}
			n.DeletionTimestamp = &created
			return n
		}(),
	} {
		t.Run(name, func(t *testing.T) {
			orig := node.DeepCopy()
			got := transformed(t, agent.TransformNode, node)
			checkIdentity(t, orig, got)
			if got.Spec.PodCIDR != orig.Spec.PodCIDR || !cmp.Equal(got.Spec.PodCIDRs, orig.Spec.PodCIDRs) {
				t.Errorf("pod CIDRs %q %q, want %q %q", got.Spec.PodCIDR, got.Spec.PodCIDRs, orig.Spec.PodCIDR, orig.Spec.PodCIDRs)
			}
			if d := cmp.Diff(agent.PodCIDRs([]corev1.Node{*orig}), agent.PodCIDRs([]corev1.Node{*got}), equateIPs); d != "" {
				t.Errorf("PodCIDRs differs (-original +transformed):\n%s", d)
			}
			if got.Labels != nil || got.Annotations != nil || !cmp.Equal(got.Status, corev1.NodeStatus{}) || got.Spec.ProviderID != "" {
				t.Errorf("kept more than the pod CIDRs: %+v", got)
			}
		})
	}
}

func TestTransformService(t *testing.T) {
	for name, svc := range map[string]*corev1.Service{
		"as created by a client": apiService(3),
		"kubectl-applied, dual-stack, ClientIP affinity, local, being deleted": func() *corev1.Service {
			s := apiService(4)
			s.Annotations["kubectl.kubernetes.io/last-applied-configuration"] = `{"apiVersion":"v1","kind":"Service"}`
			s.Spec.ClusterIPs = append(s.Spec.ClusterIPs, "fd00:96::4")
			s.Spec.IPFamilies = append(s.Spec.IPFamilies, corev1.IPv6Protocol)
			s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
			s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr.To[int32](600)}}
			s.Spec.InternalTrafficPolicy = ptr.To(corev1.ServiceInternalTrafficPolicyLocal)
			s.DeletionTimestamp = &created
			return s
		}(),
		"LoadBalancer with status": func() *corev1.Service {
			s := apiService(5)
			s.Spec.Type = corev1.ServiceTypeLoadBalancer
			s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "203.0.113.5"}}
			return s
		}(),
		"out of scope": func() *corev1.Service { s := apiService(6); s.Labels = nil; return s }(),
	} {
		t.Run(name, func(t *testing.T) {
			orig := svc.DeepCopy()
			got := transformed(t, agent.TransformService, svc)
			checkIdentity(t, orig, got)
			if desired.InputsChanged(orig, got) {
				t.Error("InputsChanged(original, transformed): the transform dropped something the predicate compares")
			}
			if d := cmp.Diff(orig.Spec, got.Spec); d != "" {
				t.Errorf("spec changed (-original +transformed):\n%s", d)
			}
			if d := cmp.Diff(orig.Labels, got.Labels); d != "" {
				t.Errorf("labels changed:\n%s", d)
			}
			if got.Annotations != nil || !cmp.Equal(got.Status, corev1.ServiceStatus{}) {
				t.Errorf("annotations %v or status %+v kept", got.Annotations, got.Status)
			}
			opts := desired.Options{NodeName: "node-0005", DefaultScheduler: "rr"}
			slices := []*discoveryv1.EndpointSlice{apiEndpointSlice(orig, 4, 5)}
			checkSameState(t, opts, orig, slices, got, slices)
		})
	}
}

func TestTransformEndpointSlice(t *testing.T) {
	svc := apiService(11)
	for name, es := range map[string]*discoveryv1.EndpointSlice{
		"as the EndpointSlice controller writes it": apiEndpointSlice(svc, 11, 5),
		"no trigger time, no endpoints": func() *discoveryv1.EndpointSlice {
			es := apiEndpointSlice(svc, 11, 0)
			es.Annotations = nil
			return es
		}(),
		"hand-written: nil conditions, no node, several addresses, unnamed and nil ports": func() *discoveryv1.EndpointSlice {
			es := apiEndpointSlice(svc, 11, 3)
			es.Labels = map[string]string{discoveryv1.LabelServiceName: svc.Name}
			es.Endpoints[0].Conditions = discoveryv1.EndpointConditions{}
			es.Endpoints[1].NodeName = nil
			es.Endpoints[2].Addresses = append(es.Endpoints[2].Addresses, "10.200.0.1")
			es.Ports = append(es.Ports, discoveryv1.EndpointPort{Port: ptr.To[int32](9090)}, discoveryv1.EndpointPort{Name: ptr.To("all")})
			return es
		}(),
	} {
		t.Run(name, func(t *testing.T) {
			orig := es.DeepCopy()
			got := transformed(t, agent.TransformEndpointSlice, es)
			checkIdentity(t, orig, got)
			if got.AddressType != orig.AddressType || !cmp.Equal(got.Ports, orig.Ports) {
				t.Errorf("addressType/ports changed: %v %v", got.AddressType, got.Ports)
			}
			if want := map[string]string{discoveryv1.LabelServiceName: svc.Name}; !cmp.Equal(got.Labels, want) {
				t.Errorf("labels %v, want %v", got.Labels, want)
			}
			var wantAnn map[string]string
			if v, ok := orig.Annotations[corev1.EndpointsLastChangeTriggerTime]; ok {
				wantAnn = map[string]string{corev1.EndpointsLastChangeTriggerTime: v}
			}
			if !cmp.Equal(got.Annotations, wantAnn) {
				t.Errorf("annotations %v, want %v", got.Annotations, wantAnn)
			}
			if len(got.Endpoints) != len(orig.Endpoints) {
				t.Fatalf("%d endpoints, want %d", len(got.Endpoints), len(orig.Endpoints))
			}
			for i, ep := range got.Endpoints {
				want := discoveryv1.Endpoint{Addresses: orig.Endpoints[i].Addresses, Conditions: orig.Endpoints[i].Conditions, NodeName: orig.Endpoints[i].NodeName}
				if d := cmp.Diff(want, ep); d != "" {
					t.Errorf("endpoint %d (-want +got):\n%s", i, d)
				}
			}
			for _, node := range []string{"", "node-0011", "node-0012"} {
				opts := desired.Options{NodeName: node, DefaultScheduler: "rr"}
				local := svc.DeepCopy()
				local.Spec.InternalTrafficPolicy = ptr.To(corev1.ServiceInternalTrafficPolicyLocal)
				for _, s := range []*corev1.Service{svc, local} {
					checkSameState(t, opts, s, []*discoveryv1.EndpointSlice{orig}, s, []*discoveryv1.EndpointSlice{got})
				}
			}
		})
	}
}

// The cache keeps service.kubernetes.io/headless on a slice, so that desired.ForService can leave the slice
// out as kube-proxy does (upstream's e2e "Services should implement service.kubernetes.io/headless").
func TestTransformEndpointSliceKeepsHeadlessLabel(t *testing.T) {
	svc := apiService(12)
	es := apiEndpointSlice(svc, 12, 2)
	es.Labels[corev1.IsHeadlessService] = ""
	got := transformed(t, agent.TransformEndpointSlice, es)
	if want := map[string]string{discoveryv1.LabelServiceName: svc.Name, corev1.IsHeadlessService: ""}; !cmp.Equal(got.Labels, want) {
		t.Errorf("labels %v, want %v", got.Labels, want)
	}
	st, err := desired.ForService(svc, []*discoveryv1.EndpointSlice{got}, nil, desired.Options{DefaultScheduler: "rr"})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st.Servers {
		if len(s.Destinations) > 0 {
			t.Errorf("the headless-labelled slice is proxied: %+v", st)
		}
	}
}

// checkSameState fails unless desired.ForService computes the same State (or error) on both inputs; an
// in-scope, cluster-wide Service with endpoints must get real servers, so the comparison is not vacuous.
func checkSameState(t *testing.T, opts desired.Options, svcA *corev1.Service, slicesA []*discoveryv1.EndpointSlice,
	svcB *corev1.Service, slicesB []*discoveryv1.EndpointSlice) {
	t.Helper()
	want, werr := desired.ForService(svcA, slicesA, nil, opts)
	got, gerr := desired.ForService(svcB, slicesB, nil, opts)
	if (werr == nil) != (gerr == nil) {
		t.Fatalf("ForService errors differ: %v vs %v", werr, gerr)
	}
	clusterWide := ptr.Deref(svcA.Spec.InternalTrafficPolicy, corev1.ServiceInternalTrafficPolicyCluster) == corev1.ServiceInternalTrafficPolicyCluster
	if desired.InScope(svcA, opts.ManageAll) && clusterWide && len(slicesA[0].Endpoints) > 1 &&
		(len(want.Servers) == 0 || len(want.Servers[0].Destinations) == 0) {
		t.Errorf("no real servers for an in-scope Service: %+v", want)
	}
	if d := cmp.Diff(want, got, equateIPs); d != "" {
		t.Errorf("ForService differs (-original +transformed):\n%s", d)
	}
}
