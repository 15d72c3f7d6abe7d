package kubelet

import (
	"net"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

func TestPodResolvConf(t *testing.T) {
	host := parseResolvConf([]byte("# the node's\nnameserver 192.168.100.1\nsearch lab.example\noptions edns0 ndots:1\n"))
	s := dnsSettings{ClusterDNS: []net.IP{net.ParseIP("10.96.0.10")}, ClusterDomain: "cluster.local", Host: host}
	pod := func(policy corev1.DNSPolicy, hostNet bool, cfg *corev1.PodDNSConfig) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "p"},
			Spec: corev1.PodSpec{DNSPolicy: policy, HostNetwork: hostNet, DNSConfig: cfg}}
	}
	cluster := resolvConf{Nameservers: []string{"10.96.0.10"},
		Searches: []string{"web.svc.cluster.local", "svc.cluster.local", "cluster.local", "lab.example"},
		Options:  []string{"ndots:5"}}
	cases := []struct {
		name string
		pod  *corev1.Pod
		s    dnsSettings
		want resolvConf
	}{
		{"ClusterFirst", pod(corev1.DNSClusterFirst, false, nil), s, cluster},
		{"unset policy is ClusterFirst", pod("", false, nil), s, cluster},
		{"ClusterFirst on the host network is Default", pod(corev1.DNSClusterFirst, true, nil), s, host},
		{"ClusterFirstWithHostNet", pod(corev1.DNSClusterFirstWithHostNet, true, nil), s, cluster},
		{"no cluster DNS: Default", pod(corev1.DNSClusterFirst, false, nil), dnsSettings{ClusterDomain: "cluster.local", Host: host}, host},
		{"Default", pod(corev1.DNSDefault, false, nil), s, host},
		{"None with dnsConfig", pod(corev1.DNSNone, false, &corev1.PodDNSConfig{
			Nameservers: []string{"1.2.3.4"}, Searches: []string{"a.example"},
			Options: []corev1.PodDNSConfigOption{{Name: "ndots", Value: ptr.To("2")}, {Name: "rotate"}}}), s,
			resolvConf{Nameservers: []string{"1.2.3.4"}, Searches: []string{"a.example"}, Options: []string{"ndots:2", "rotate"}}},
		{"ClusterFirst with dnsConfig merged", pod(corev1.DNSClusterFirst, false, &corev1.PodDNSConfig{
			Nameservers: []string{"10.96.0.10", "1.2.3.4"}, Searches: []string{"extra.example"},
			Options: []corev1.PodDNSConfigOption{{Name: "ndots", Value: ptr.To("2")}}}), s,
			resolvConf{Nameservers: []string{"10.96.0.10", "1.2.3.4"},
				Searches: append(append([]string{}, cluster.Searches...), "extra.example"), Options: []string{"ndots:2"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := podResolvConf(tc.pod, tc.s); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
	// The node's settings are not changed by a pod's dnsConfig.
	if !reflect.DeepEqual(s.Host.Options, []string{"edns0", "ndots:1"}) {
		t.Errorf("node options changed: %v", s.Host.Options)
	}
	want := "nameserver 10.96.0.10\nsearch web.svc.cluster.local svc.cluster.local cluster.local lab.example\noptions ndots:5\n"
	if got := cluster.String(); got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

func TestWritePodResolvConf(t *testing.T) {
	dir := t.TempDir()
	k := &Kubelet{cfg: Config{ClusterDNS: []net.IP{net.ParseIP("10.96.0.10")}, ClusterDomain: "cluster.local",
		ResolvConf: filepath.Join(dir, "etc", "resolv.conf"), NetnsEtcDir: filepath.Join(dir, "etc", "netns")}}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "p"}}
	if err := k.writePodResolvConf(pod, "pod-web-p"); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "etc", "netns", "pod-web-p", "resolv.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "nameserver 10.96.0.10\nsearch web.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n" {
		t.Errorf("resolv.conf = %q", got)
	}
	// `ip netns exec` binds only over an existing /etc/resolv.conf: a missing one is created.
	if _, err := os.Stat(k.cfg.ResolvConf); err != nil {
		t.Errorf("node resolv.conf: %v", err)
	}
	if err := k.removePodEtc("pod-web-p"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "etc", "netns", "pod-web-p")); !os.IsNotExist(err) {
		t.Errorf("pod etc dir left: %v", err)
	}
}
