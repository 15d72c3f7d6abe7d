package agent

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	lbv1alpha1 "github.com/ipvs-operator/ipvs-operator/api/v1alpha1"
	"github.com/ipvs-operator/ipvs-operator/controllers/agent/desired"
	"github.com/ipvs-operator/ipvs-operator/controllers/agent/health"
	"github.com/ipvs-operator/ipvs-operator/ipvs/syncer"
)

// syncOnlyEngine accepts every SyncService and is asked nothing else.
type syncOnlyEngine struct{ Engine }

func (syncOnlyEngine) SyncService(context.Context, string, desired.State) (syncer.Result, error) {
	return syncer.Result{}, nil
}

// Each (endpoint, port) is probed once on a node: when two policies with different checks select the same
// Services, only the older governs them (so only its check runs), and two Services that share endpoints under
// it share their probes.
func TestOneProbePerEndpointWhenPoliciesOverlap(t *testing.T) {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, lbv1alpha1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	sel := &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "web"}}
	older := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	policies := []client.Object{
		&lbv1alpha1.ServicePolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "tcp", CreationTimestamp: metav1.NewTime(older)},
			Spec: lbv1alpha1.ServicePolicySpec{Selector: sel, HealthCheck: &lbv1alpha1.HealthCheckSpec{}}},
		&lbv1alpha1.ServicePolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "http", CreationTimestamp: metav1.NewTime(older.Add(time.Hour))},
			Spec: lbv1alpha1.ServicePolicySpec{Selector: sel, HealthCheck: &lbv1alpha1.HealthCheckSpec{Protocol: lbv1alpha1.HealthCheckHTTP, Path: "/healthz"}}},
	}
	objs := policies
	endpoints := []string{"10.244.1.5", "10.244.1.6", "10.244.2.7"}
	for i, name := range []string{"web", "web-alias"} {
		objs = append(objs, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, Labels: map[string]string{"tier": "web", desired.ProxyNameLabel: desired.ProxyName}},
			Spec: corev1.ServiceSpec{ClusterIP: fmt.Sprintf("10.96.0.%d", i+1), ClusterIPs: []string{fmt.Sprintf("10.96.0.%d", i+1)},
				Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}},
		})
		es := &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: "ns", Name: name + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
		}
		for _, ip := range endpoints {
			es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}})
		}
		objs = append(objs, es)
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).
		WithIndex(&discoveryv1.EndpointSlice{}, serviceNameField, func(o client.Object) []string {
			return []string{o.GetLabels()[discoveryv1.LabelServiceName]}
		}).Build()
	hc := NewHealthChecker(health.Options{}, nil)
	r := &ServiceReconciler{Client: c, Engine: syncOnlyEngine{}, Health: hc, Clock: clock.RealClock{},
		Recorder: events.NewFakeRecorder(100), Options: desired.Options{NodeName: "node-a"}}
	for _, name := range []string{"web", "web-alias"} {
		if _, err := r.sync(t.Context(), types.NamespacedName{Namespace: "ns", Name: name}); err != nil {
			t.Fatalf("sync %s: %v", name, err)
		}
	}
	targets, _ := hc.Counts()
	if targets != len(endpoints) {
		t.Errorf("%d probe targets for %d endpoints behind two Services and two overlapping policies, want one each", targets, len(endpoints))
	}
	for _, ip := range endpoints {
		tcp := health.Target{Addr: netip.MustParseAddr(ip), Port: 8080, Check: healthCheckSettings(&lbv1alpha1.HealthCheckSpec{}).Check}
		if _, registered := hc.prober.Lookup(tcp); !registered {
			t.Errorf("%s: the older policy's TCP check is not the one probed", ip)
		}
	}
}
