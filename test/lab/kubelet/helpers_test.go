package kubelet

import (
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	k8stesting "k8s.io/client-go/testing"
)

type (
	k8sAction     = k8stesting.Action
	runtimeObject = runtime.Object
)

func keyOf(pod *corev1.Pod) types.NamespacedName {
	return types.NamespacedName{Namespace: pod.Namespace, Name: pod.Name}
}

// testKubeletConfig is the Config of a kubelet under test in this process's network namespace (defaults not yet
// applied): this test binary plays labvm, state and logs go under dir, and grace periods are short.
func testKubeletConfig(t *testing.T, dir, podCIDR string) Config {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return Config{
		NodeName: "node-a", NodeIP: net.ParseIP("127.0.0.1"), PodCIDR: mustCIDR(t, podCIDR),
		LabvmBinary: self, StateDir: filepath.Join(dir, "state"), PodLogDir: filepath.Join(dir, "logs"),
		HeartbeatInterval: time.Second, MaxGracePeriod: 200 * time.Millisecond, KillGracePeriod: 500 * time.Millisecond,
	}
}
