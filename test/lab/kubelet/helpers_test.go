package kubelet

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
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

// startDeletion does to the pod what the API server does to one deleted gracefully: it sets its
// deletionTimestamp and, with grace > 0, its deletionGracePeriodSeconds. It returns when it did.
func startDeletion(t *testing.T, client kubernetes.Interface, namespace, name string, grace int64) time.Time {
	t.Helper()
	p, err := client.CoreV1().Pods(namespace).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	now := metav1.Now()
	p.DeletionTimestamp = &now
	if grace > 0 {
		p.DeletionGracePeriodSeconds = &grace
	}
	if _, err := client.CoreV1().Pods(namespace).Update(context.Background(), p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	return time.Now()
}
