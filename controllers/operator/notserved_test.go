package operator

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ipvs-operator/ipvs-operator/api/v1alpha1"
	"github.com/ipvs-operator/ipvs-operator/controllers/agent/desired"
)

func TestNotServed(t *testing.T) {
	labelled := map[string]string{v1alpha1.ServiceProxyNameLabel: v1alpha1.ServiceProxyName}
	other := map[string]string{v1alpha1.ServiceProxyNameLabel: "kube-proxy"}
	svc := func(typ corev1.ServiceType, labels map[string]string, edit func(*corev1.Service)) *corev1.Service {
		s := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop", Labels: labels},
			Spec: corev1.ServiceSpec{Type: typ, ClusterIP: "10.96.0.10", ClusterIPs: []string{"10.96.0.10"},
				Ports: []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}}},
		}
		if typ == corev1.ServiceTypeNodePort || typ == corev1.ServiceTypeLoadBalancer {
			s.Spec.Ports[0].NodePort = 30080
		}
		if edit != nil {
			edit(s)
		}
		return s
	}
	for _, tc := range []struct {
		name      string
		svc       *corev1.Service
		manageAll bool
		want      []string
	}{
		{"ClusterIP: everything served", svc(corev1.ServiceTypeClusterIP, nil, nil), true, nil},
		{"NodePort, scope all", svc(corev1.ServiceTypeNodePort, nil, nil), true,
			[]string{"spec.type NodePort's nodePort 30080/TCP"}},
		{"NodePort, scope labelled, labelled", svc(corev1.ServiceTypeNodePort, labelled, nil), false,
			[]string{"spec.type NodePort's nodePort 30080/TCP"}},
		{"NodePort, scope labelled, unlabelled: kube-proxy's", svc(corev1.ServiceTypeNodePort, nil, nil), false, nil},
		{"NodePort labelled for another proxy, scope all", svc(corev1.ServiceTypeNodePort, other, nil), true, nil},
		{"LoadBalancer with ingress and health check port", svc(corev1.ServiceTypeLoadBalancer, nil, func(s *corev1.Service) {
			s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Port: 53, NodePort: 30053, Protocol: corev1.ProtocolUDP})
			s.Spec.HealthCheckNodePort = 32000
			s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "203.0.113.7"}, {Hostname: "lb.example.test"}}
		}), true, []string{
			"spec.type LoadBalancer's nodePort 30080/TCP, 30053/UDP",
			"spec.healthCheckNodePort 32000",
			"status.loadBalancer.ingress 203.0.113.7",
		}},
		{"LoadBalancer without node ports, no ingress yet", svc(corev1.ServiceTypeLoadBalancer, nil, func(s *corev1.Service) {
			s.Spec.Ports[0].NodePort = 0
		}), true, nil},
		{"externalIPs on a ClusterIP Service, bounded", svc(corev1.ServiceTypeClusterIP, nil, func(s *corev1.Service) {
			s.Spec.ExternalIPs = []string{"198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.4", "198.51.100.5", "198.51.100.6"}
		}), true, []string{"spec.externalIPs 198.51.100.1, 198.51.100.2, 198.51.100.3, 198.51.100.4 and 2 more"}},
		{"headless with externalIPs: nobody serves it, the agents neither", svc(corev1.ServiceTypeClusterIP, nil, func(s *corev1.Service) {
			s.Spec.ClusterIP, s.Spec.ClusterIPs, s.Spec.ExternalIPs = corev1.ClusterIPNone, []string{corev1.ClusterIPNone}, []string{"198.51.100.1"}
		}), true, nil},
		{"ExternalName", svc(corev1.ServiceTypeExternalName, nil, func(s *corev1.Service) {
			s.Spec.ClusterIP, s.Spec.ClusterIPs, s.Spec.ExternalIPs = "", nil, []string{"198.51.100.1"}
		}), true, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := NotServed(tc.svc, tc.manageAll); !slices.Equal(got, tc.want) {
				t.Errorf("NotServed = %q, want %q", got, tc.want)
			}
			note := NotServedNote(tc.svc, tc.manageAll)
			if (note == "") != (len(tc.want) == 0) {
				t.Errorf("NotServedNote = %q", note)
			}
			for _, f := range tc.want {
				if !strings.Contains(note, f) {
					t.Errorf("NotServedNote = %q, missing %q", note, f)
				}
			}
			if len(note) > 1024 {
				t.Errorf("NotServedNote is %d bytes, more than an event's note may hold", len(note))
			}
		})
	}
}

func TestNotServedNote(t *testing.T) {
	s := &corev1.Service{Spec: corev1.ServiceSpec{
		Type: corev1.ServiceTypeNodePort, ClusterIP: "10.96.0.10", ClusterIPs: []string{"10.96.0.10", "fd00::10"},
		Ports:       []corev1.ServicePort{{Port: 80, NodePort: 30080, Protocol: corev1.ProtocolTCP}, {Port: 443, NodePort: 30443}},
		ExternalIPs: []string{"198.51.100.7"},
	}}
	want := "Not served: spec.type NodePort's nodePort 30080/TCP, 30443/TCP; spec.externalIPs 198.51.100.7. " +
		"ipvs-operator serves only the ClusterIP (10.96.0.10, fd00::10 port 80/TCP, 443/TCP) and with scope all it " +
		"stands in for kube-proxy; use kube-proxy or a load-balancer implementation for node ports, external and " +
		"load-balancer IPs."
	if got := NotServedNote(s, true); got != want {
		t.Errorf("scope all:\n got %q\nwant %q", got, want)
	}
	s.Labels = map[string]string{v1alpha1.ServiceProxyNameLabel: v1alpha1.ServiceProxyName}
	if got := NotServedNote(s, false); !strings.Contains(got, "kube-proxy ignores Services labelled "+
		v1alpha1.ServiceProxyNameLabel+"="+v1alpha1.ServiceProxyName) {
		t.Errorf("scope labelled: %q", got)
	}
}

// TestInScopeMatchesTheAgent holds the operator's copy of the scope rule equal to the agent's.
func TestInScopeMatchesTheAgent(t *testing.T) {
	for _, labels := range []map[string]string{
		nil, {"app": "web"},
		{v1alpha1.ServiceProxyNameLabel: v1alpha1.ServiceProxyName},
		{v1alpha1.ServiceProxyNameLabel: "kube-proxy"},
		{v1alpha1.ServiceProxyNameLabel: ""},
	} {
		for _, all := range []bool{false, true} {
			s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Labels: labels}}
			if got, want := inScope(s, all), desired.InScope(s, all); got != want {
				t.Errorf("labels %v, manageAll %v: operator says %v, agent %v", labels, all, got, want)
			}
		}
	}
}
