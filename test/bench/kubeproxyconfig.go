package bench

// What is pure about running kube-proxy in the harness: its configuration file and the reading of
// Prometheus histograms. Untagged, so `go test ./test/bench/` tests them without the lab.

import (
	"fmt"
	"io"
	"strings"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	componentbaseconfigv1alpha1 "k8s.io/component-base/config/v1alpha1"
	kubeproxyconfigv1alpha1 "k8s.io/kube-proxy/config/v1alpha1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"
)

// kube-proxy's ports, bound to 127.0.0.1 in the node's network namespace (one namespace per node, so they
// clash with nothing the lab runs; the agent's are others).
const (
	kubeProxyHealthzPort = 10256
	kubeProxyMetricsPort = 10249
)

// KubeProxySettings are what the harness chooses for a kube-proxy run; everything else is kube-proxy's
// default, as a cluster would run it.
type KubeProxySettings struct {
	// Mode is "nftables", "iptables" or "ipvs".
	Mode string
	// Node is the Node kube-proxy serves (hostnameOverride).
	Node string
	// Kubeconfig is its path in the guest.
	Kubeconfig string
	// ClusterCIDR is the pods' range: detectLocalMode ClusterCIDR, so no wait for the Node's podCIDRs
	// (the agent runs in the same mode).
	ClusterCIDR string
}

// KubeProxyConfig renders kube-proxy's configuration file (--config). Conntrack sysctls are left alone:
// nf_conntrack_max is not per network namespace, and the agent sets none either.
func KubeProxyConfig(s KubeProxySettings) ([]byte, error) {
	switch s.Mode {
	case "nftables", "iptables", "ipvs":
	default:
		return nil, fmt.Errorf("bench: kube-proxy mode %q (want nftables, iptables or ipvs)", s.Mode)
	}
	if s.Node == "" || s.Kubeconfig == "" || s.ClusterCIDR == "" {
		return nil, fmt.Errorf("bench: kube-proxy needs a node, a kubeconfig and a cluster CIDR: %+v", s)
	}
	zero := &metav1.Duration{}
	c := kubeproxyconfigv1alpha1.KubeProxyConfiguration{
		TypeMeta: metav1.TypeMeta{APIVersion: kubeproxyconfigv1alpha1.SchemeGroupVersion.String(), Kind: "KubeProxyConfiguration"},
		ClientConnection: componentbaseconfigv1alpha1.ClientConnectionConfiguration{
			Kubeconfig: s.Kubeconfig,
		},
		HostnameOverride:   s.Node,
		HealthzBindAddress: fmt.Sprintf("127.0.0.1:%d", kubeProxyHealthzPort),
		MetricsBindAddress: fmt.Sprintf("127.0.0.1:%d", kubeProxyMetricsPort),
		Mode:               kubeproxyconfigv1alpha1.ProxyMode(s.Mode),
		DetectLocalMode:    "ClusterCIDR",
		ClusterCIDR:        s.ClusterCIDR,
		Conntrack: kubeproxyconfigv1alpha1.KubeProxyConntrackConfiguration{
			MaxPerCore: ptr.To[int32](0), Min: ptr.To[int32](0),
			TCPEstablishedTimeout: zero, TCPCloseWaitTimeout: zero,
		},
	}
	return yaml.Marshal(c)
}

// histogram sums the count and the sum of the histogram family name over its label sets, from the
// Prometheus text format; found is false when the family is absent.
func histogram(metrics io.Reader, name string) (count int, sum float64, found bool, err error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(metrics)
	if err != nil {
		return 0, 0, false, err
	}
	f, ok := fams[name]
	if !ok {
		return 0, 0, false, nil
	}
	for _, m := range f.GetMetric() {
		h := m.GetHistogram()
		count += int(h.GetSampleCount())
		sum += h.GetSampleSum()
	}
	return count, sum, true, nil
}

// histogramText is histogram over a string, errors counted as absent (a proxy's metrics are read once,
// at the end of a run, and a broken text there must not hide the rest of the table).
func histogramText(metrics, name string) (int, float64, bool) {
	c, s, ok, err := histogram(strings.NewReader(metrics), name)
	if err != nil {
		return 0, 0, false
	}
	return c, s, ok
}
