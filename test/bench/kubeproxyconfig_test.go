package bench

import (
	"strings"
	"testing"
	"time"

	kubeproxyconfigv1alpha1 "k8s.io/kube-proxy/config/v1alpha1"
	"sigs.k8s.io/yaml"
)

func TestKubeProxyConfig(t *testing.T) {
	s := KubeProxySettings{Mode: "nftables", Node: "node-a", Kubeconfig: "/mnt/host/kubeconfig", ClusterCIDR: "10.244.0.0/16"}
	data, err := KubeProxyConfig(s)
	if err != nil {
		t.Fatal(err)
	}
	// Strict: every key is one kube-proxy's own type knows.
	var c kubeproxyconfigv1alpha1.KubeProxyConfiguration
	if err := yaml.UnmarshalStrict(data, &c); err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	checks := []struct {
		what      string
		got, want any
	}{
		{"apiVersion", c.APIVersion, "kubeproxy.config.k8s.io/v1alpha1"},
		{"kind", c.Kind, "KubeProxyConfiguration"},
		{"mode", string(c.Mode), "nftables"},
		{"hostnameOverride", c.HostnameOverride, "node-a"},
		{"kubeconfig", c.ClientConnection.Kubeconfig, "/mnt/host/kubeconfig"},
		{"clusterCIDR", c.ClusterCIDR, "10.244.0.0/16"},
		{"detectLocalMode", string(c.DetectLocalMode), "ClusterCIDR"},
		{"healthz", c.HealthzBindAddress, "127.0.0.1:10256"},
		{"metrics", c.MetricsBindAddress, "127.0.0.1:10249"},
		// Explicit zeros, not absent: absent would be defaulted and set the node's conntrack sysctls.
		{"conntrack.maxPerCore", c.Conntrack.MaxPerCore != nil && *c.Conntrack.MaxPerCore == 0, true},
		{"conntrack.min", c.Conntrack.Min != nil && *c.Conntrack.Min == 0, true},
		{"conntrack.tcpEstablishedTimeout", c.Conntrack.TCPEstablishedTimeout != nil && c.Conntrack.TCPEstablishedTimeout.Duration == 0, true},
		{"conntrack.tcpCloseWaitTimeout", c.Conntrack.TCPCloseWaitTimeout != nil && c.Conntrack.TCPCloseWaitTimeout.Duration == 0, true},
		// Left to kube-proxy's defaults (30 s / 1 s), as clusters run it.
		{"nftables.syncPeriod", c.NFTables.SyncPeriod.Duration, time.Duration(0)},
		{"nftables.minSyncPeriod", c.NFTables.MinSyncPeriod.Duration, time.Duration(0)},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %v, want %v", ch.what, ch.got, ch.want)
		}
	}

	for _, bad := range []KubeProxySettings{
		{Mode: "userspace", Node: "n", Kubeconfig: "k", ClusterCIDR: "c"},
		{Mode: "ipvs", Kubeconfig: "k", ClusterCIDR: "c"},
		{Mode: "iptables", Node: "n", Kubeconfig: "k"},
	} {
		if _, err := KubeProxyConfig(bad); err == nil {
			t.Errorf("%+v rendered", bad)
		}
	}
}

func TestHistogram(t *testing.T) {
	const text = `# HELP kubeproxy_sync_full_proxy_rules_duration_seconds SyncProxyRules latency in seconds for full resyncs
# TYPE kubeproxy_sync_full_proxy_rules_duration_seconds histogram
kubeproxy_sync_full_proxy_rules_duration_seconds_bucket{ip_family="IPv4",le="0.001"} 0
kubeproxy_sync_full_proxy_rules_duration_seconds_bucket{ip_family="IPv4",le="+Inf"} 2
kubeproxy_sync_full_proxy_rules_duration_seconds_sum{ip_family="IPv4"} 3.5
kubeproxy_sync_full_proxy_rules_duration_seconds_count{ip_family="IPv4"} 2
kubeproxy_sync_full_proxy_rules_duration_seconds_bucket{ip_family="IPv6",le="+Inf"} 1
kubeproxy_sync_full_proxy_rules_duration_seconds_sum{ip_family="IPv6"} 0.5
kubeproxy_sync_full_proxy_rules_duration_seconds_count{ip_family="IPv6"} 1
# HELP kubeproxy_sync_proxy_rules_last_timestamp_seconds The last time proxy rules were successfully synced
# TYPE kubeproxy_sync_proxy_rules_last_timestamp_seconds gauge
kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family="IPv4"} 1.7645e+09
`
	tests := []struct {
		name      string
		metric    string
		wantCount int
		wantSum   float64
		wantFound bool
	}{
		{"summed over label sets", "kubeproxy_sync_full_proxy_rules_duration_seconds", 3, 4.0, true},
		{"absent", "ipvs_operator_agent_audit_duration_seconds", 0, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, s, ok, err := histogram(strings.NewReader(text), tt.metric)
			if err != nil {
				t.Fatal(err)
			}
			if c != tt.wantCount || s != tt.wantSum || ok != tt.wantFound {
				t.Errorf("got %d, %v, %v; want %d, %v, %v", c, s, ok, tt.wantCount, tt.wantSum, tt.wantFound)
			}
		})
	}
	if _, _, ok := histogramText("not { prometheus", "x"); ok {
		t.Error("a broken text was read as found")
	}
}
