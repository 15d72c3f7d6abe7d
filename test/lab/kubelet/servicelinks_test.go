package kubelet

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

func svc(ns, name, clusterIP string, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{ClusterIP: clusterIP, Ports: ports}}
}

func envMap(env []corev1.EnvVar) map[string]string {
	m := map[string]string{}
	for _, e := range env {
		m[e.Name] = e.Value
	}
	return m
}

func TestServiceLinkEnv(t *testing.T) {
	got := serviceLinkEnv([]*corev1.Service{svc("web", "backend-service", "10.96.3.4",
		corev1.ServicePort{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP},
		corev1.ServicePort{Name: "dns-udp", Port: 53, Protocol: corev1.ProtocolUDP})})
	want := []corev1.EnvVar{
		{Name: "BACKEND_SERVICE_SERVICE_HOST", Value: "10.96.3.4"},
		{Name: "BACKEND_SERVICE_SERVICE_PORT", Value: "80"},
		{Name: "BACKEND_SERVICE_SERVICE_PORT_HTTP", Value: "80"},
		{Name: "BACKEND_SERVICE_SERVICE_PORT_DNS_UDP", Value: "53"},
		{Name: "BACKEND_SERVICE_PORT", Value: "tcp://10.96.3.4:80"},
		{Name: "BACKEND_SERVICE_PORT_80_TCP", Value: "tcp://10.96.3.4:80"},
		{Name: "BACKEND_SERVICE_PORT_80_TCP_PROTO", Value: "tcp"},
		{Name: "BACKEND_SERVICE_PORT_80_TCP_PORT", Value: "80"},
		{Name: "BACKEND_SERVICE_PORT_80_TCP_ADDR", Value: "10.96.3.4"},
		{Name: "BACKEND_SERVICE_PORT_53_UDP", Value: "udp://10.96.3.4:53"},
		{Name: "BACKEND_SERVICE_PORT_53_UDP_PROTO", Value: "udp"},
		{Name: "BACKEND_SERVICE_PORT_53_UDP_PORT", Value: "53"},
		{Name: "BACKEND_SERVICE_PORT_53_UDP_ADDR", Value: "10.96.3.4"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("serviceLinkEnv =\n%v\nwant\n%v", got, want)
	}
	v6 := envMap(serviceLinkEnv([]*corev1.Service{svc("web", "v6", "fd00::a", corev1.ServicePort{Port: 8080})}))
	if v6["V6_PORT"] != "tcp://[fd00::a]:8080" || v6["V6_SERVICE_PORT"] != "8080" {
		t.Errorf("IPv6 service: %v", v6)
	}
}

func TestLinkedServices(t *testing.T) {
	p := corev1.ServicePort{Port: 80}
	services := []*corev1.Service{
		svc("default", "kubernetes", "10.96.0.1", corev1.ServicePort{Name: "https", Port: 443}),
		svc("default", "other-default", "10.96.0.7", p),
		svc("web", "backend", "10.96.3.4", p),
		svc("web", "headless", corev1.ClusterIPNone, p),
		svc("web", "external", "", p),
		svc("shop", "cart", "10.96.9.9", p),
	}
	names := func(ss []*corev1.Service) []string {
		out := make([]string, 0, len(ss))
		for _, s := range ss {
			out = append(out, s.Namespace+"/"+s.Name)
		}
		return out
	}
	cases := []struct {
		name   string
		ns     string
		enable bool
		want   []string
	}{
		{"same namespace plus kubernetes, only with a ClusterIP", "web", true, []string{"web/backend", "default/kubernetes"}},
		{"enableServiceLinks=false: kubernetes only", "web", false, []string{"default/kubernetes"}},
		{"default namespace", "default", true, []string{"default/kubernetes", "default/other-default"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := names(linkedServices(services, tc.ns, tc.enable)); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
	// A Service called kubernetes in the pod's own namespace wins over the default namespace's.
	// Listed first: the pod's namespace wins whatever the order.
	own := append([]*corev1.Service{svc("web", "kubernetes", "10.96.5.5", p)}, services...)
	for _, s := range linkedServices(own, "web", true) {
		if s.Name == "kubernetes" && s.Namespace != "web" {
			t.Errorf("kubernetes from %s, want the pod's namespace", s.Namespace)
		}
	}
}

func TestPodServiceEnv(t *testing.T) {
	access := clusterAccess{Server: "https://10.0.2.100:6443"}
	services := []*corev1.Service{
		svc("default", "kubernetes", "10.96.0.1", corev1.ServicePort{Name: "https", Port: 443}),
		svc("web", "backend", "10.96.3.4", corev1.ServicePort{Port: 80}),
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "client"}}
	env := envMap(podServiceEnv(pod, services, access))
	for k, v := range map[string]string{
		"KUBERNETES_SERVICE_HOST": "10.0.2.100", "KUBERNETES_SERVICE_PORT": "6443", "KUBERNETES_SERVICE_PORT_HTTPS": "6443",
		"KUBERNETES_PORT": "tcp://10.0.2.100:6443", "KUBERNETES_PORT_6443_TCP_ADDR": "10.0.2.100",
		"BACKEND_SERVICE_HOST": "10.96.3.4", "BACKEND_PORT_80_TCP": "tcp://10.96.3.4:80",
	} {
		if env[k] != v {
			t.Errorf("%s = %q, want %q", k, env[k], v)
		}
	}
	pod.Spec.EnableServiceLinks = ptr.To(false)
	env = envMap(podServiceEnv(pod, services, access))
	if _, ok := env["BACKEND_SERVICE_HOST"]; ok || env["KUBERNETES_SERVICE_HOST"] != "10.0.2.100" {
		t.Errorf("enableServiceLinks=false: %v", env)
	}
}
