package kubelet

import (
	"context"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func testFacts() nodeFacts {
	return nodeFacts{Name: "node-a", IP: "192.168.100.11", PodCIDR: "10.244.1.0/24", CPU: 2, MemoryBytes: 2 << 30,
		KernelVersion: "6.1.0-56-amd64", OSImage: "lab", Arch: "amd64"}
}

func TestRegisterCreatesReadyNode(t *testing.T) {
	client := fake.NewClientset()
	clock := time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)
	r := &nodeRegistrar{client: client, facts: testFacts(), log: logr.Discard(), now: func() time.Time { return clock }}
	ctx := context.Background()
	if err := r.Register(ctx); err != nil {
		t.Fatal(err)
	}
	node, err := client.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if node.Spec.PodCIDR != "10.244.1.0/24" || len(node.Spec.PodCIDRs) != 1 || len(node.Spec.Taints) != 0 {
		t.Errorf("spec = %+v", node.Spec)
	}
	if node.Labels[corev1.LabelHostname] != "node-a" || node.Labels[corev1.LabelOSStable] != "linux" {
		t.Errorf("labels = %v", node.Labels)
	}
	st := node.Status
	if q := st.Capacity[corev1.ResourcePods]; q.Value() != 110 {
		t.Errorf("pods capacity = %v", q.String())
	}
	if q := st.Allocatable[corev1.ResourceCPU]; q.Value() != 2 {
		t.Errorf("cpu allocatable = %v", q.String())
	}
	if st.NodeInfo.KubeletVersion != "v1.37.1" {
		t.Errorf("kubelet version = %q", st.NodeInfo.KubeletVersion)
	}
	addrs := map[corev1.NodeAddressType]string{}
	for _, a := range st.Addresses {
		addrs[a.Type] = a.Address
	}
	if addrs[corev1.NodeInternalIP] != "192.168.100.11" || addrs[corev1.NodeHostName] != "node-a" {
		t.Errorf("addresses = %v", st.Addresses)
	}
	var ready *corev1.NodeCondition
	for i := range st.Conditions {
		if st.Conditions[i].Type == corev1.NodeReady {
			ready = &st.Conditions[i]
		}
	}
	if ready == nil || ready.Status != corev1.ConditionTrue || !ready.LastHeartbeatTime.Time.Equal(clock) {
		t.Fatalf("Ready condition = %+v", ready)
	}
	lease, err := client.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx, "node-a", metav1.GetOptions{})
	if err != nil || lease.Spec.RenewTime == nil || *lease.Spec.HolderIdentity != "node-a" {
		t.Fatalf("lease = %+v, %v", lease, err)
	}

	// A heartbeat moves the heartbeat time and renews the lease, but not the transition time.
	clock = clock.Add(10 * time.Second)
	if err := r.Heartbeat(ctx); err != nil {
		t.Fatal(err)
	}
	node, _ = client.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			if !c.LastHeartbeatTime.Time.Equal(clock) || c.LastTransitionTime.Time.Equal(clock) {
				t.Errorf("after heartbeat: %+v", c)
			}
		}
	}
	lease, _ = client.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx, "node-a", metav1.GetOptions{})
	if !lease.Spec.RenewTime.Time.Equal(clock) {
		t.Errorf("lease renew time = %v", lease.Spec.RenewTime)
	}
}

func TestRegisterAdoptsExistingNode(t *testing.T) {
	existing := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a", Labels: map[string]string{"keep": "me"}}}
	client := fake.NewClientset(existing)
	r := &nodeRegistrar{client: client, facts: testFacts(), log: logr.Discard(), now: time.Now}
	if err := r.Register(context.Background()); err != nil {
		t.Fatal(err)
	}
	node, _ := client.CoreV1().Nodes().Get(context.Background(), "node-a", metav1.GetOptions{})
	if node.Labels["keep"] != "me" || node.Labels[corev1.LabelHostname] != "node-a" || node.Spec.PodCIDR != "10.244.1.0/24" {
		t.Errorf("node = %+v", node)
	}
}

func TestRegisterRefusesAnotherPodCIDR(t *testing.T) {
	existing := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}, Spec: corev1.NodeSpec{PodCIDR: "10.244.9.0/24"}}
	r := &nodeRegistrar{client: fake.NewClientset(existing), facts: testFacts(), log: logr.Discard(), now: time.Now}
	if err := r.Register(context.Background()); err == nil {
		t.Error("a node whose pod CIDR differs was accepted")
	}
}

// With --no-node-pod-cidr the Node carries no pod CIDR, as with CNIs that allocate pod addresses themselves.
func TestRegisterWithoutNodePodCIDR(t *testing.T) {
	client := fake.NewClientset()
	f := testFacts()
	f.PodCIDR = ""
	r := &nodeRegistrar{client: client, facts: f, log: logr.Discard(), now: time.Now}
	ctx := context.Background()
	for range 2 { // registering again changes nothing
		if err := r.Register(ctx); err != nil {
			t.Fatal(err)
		}
	}
	node, err := client.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if node.Spec.PodCIDR != "" || len(node.Spec.PodCIDRs) != 0 {
		t.Errorf("spec = %+v, want no pod CIDR", node.Spec)
	}
	if got := localNodeFacts(Config{NodeName: "n", NodeIP: []byte{192, 168, 100, 11}, PodCIDR: mustCIDR(t, "10.244.1.0/24"), NoNodePodCIDR: true}); got.PodCIDR != "" {
		t.Errorf("localNodeFacts with NoNodePodCIDR: PodCIDR %q", got.PodCIDR)
	}
}
