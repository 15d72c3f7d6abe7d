package kubelet

import (
	"net"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The Node tells kube-apiserver where the kubelet API is: the ExternalIP (preferred by the lab's
// --kubelet-preferred-address-types) and the kubelet endpoint port; InternalIP stays the node IP.
func TestNodeAdvertisesTheKubeletAPI(t *testing.T) {
	_, cidr, _ := net.ParseCIDR("10.244.1.0/24")
	base := Config{NodeName: "node-a", NodeIP: net.ParseIP("192.168.100.11"), PodCIDR: cidr, LabvmBinary: "/labvm"}
	tests := []struct {
		name      string
		advertise string
		wantExt   string
		wantPort  int32
	}{
		{name: "not served", wantPort: 10250},
		{name: "behind the VM's port forward", advertise: "127.0.0.1:41234", wantExt: "127.0.0.1", wantPort: 41234},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base
			cfg.AdvertiseAddress = tt.advertise
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			var st corev1.NodeStatus
			applyNodeStatus(&st, localNodeFacts(cfg), metav1.Now())
			addrs := map[corev1.NodeAddressType]string{}
			for _, a := range st.Addresses {
				addrs[a.Type] = a.Address
			}
			if addrs[corev1.NodeInternalIP] != "192.168.100.11" || addrs[corev1.NodeExternalIP] != tt.wantExt {
				t.Errorf("addresses = %v", st.Addresses)
			}
			if got := st.DaemonEndpoints.KubeletEndpoint.Port; got != tt.wantPort {
				t.Errorf("kubelet port = %d, want %d", got, tt.wantPort)
			}
		})
	}
	for _, bad := range []string{"127.0.0.1", "localhost:10250", "127.0.0.1:0", "127.0.0.1:70000"} {
		cfg := base
		cfg.AdvertiseAddress = bad
		if cfg.Validate() == nil {
			t.Errorf("advertise address %q accepted", bad)
		}
	}
}
