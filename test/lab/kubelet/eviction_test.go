package kubelet

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"
)

func limited(name, limit string) corev1.Container {
	c := corev1.Container{Name: name}
	if limit != "" {
		c.Resources.Limits = corev1.ResourceList{corev1.ResourceEphemeralStorage: resource.MustParse(limit)}
	}
	return c
}

func TestStorageLimitExceeded(t *testing.T) {
	const mi = 1 << 20
	for _, tc := range []struct {
		name       string
		containers []corev1.Container
		usage      map[string]int64
		want       string // "" for no eviction
	}{
		{"under the limit", []corev1.Container{limited("a", "5Mi")}, map[string]int64{"a": 4 * mi}, ""},
		{"exactly the limit is allowed", []corev1.Container{limited("a", "5Mi")}, map[string]int64{"a": 5 * mi}, ""},
		{"over the limit: the kubelet's message", []corev1.Container{limited("a", "5Mi")}, map[string]int64{"a": 10 * mi},
			`Container a exceeded its local ephemeral storage limit "5Mi". `},
		{"no limit: never", []corev1.Container{limited("a", "")}, map[string]int64{"a": 1 << 40}, ""},
		{"a zero limit means none", []corev1.Container{limited("a", "0")}, map[string]int64{"a": mi}, ""},
		{"not measured: never", []corev1.Container{limited("a", "1Mi")}, map[string]int64{}, ""},
		{"the first offender in spec order", []corev1.Container{limited("a", "1Mi"), limited("b", "1Mi")},
			map[string]int64{"a": mi, "b": 2 * mi}, `Container b exceeded its local ephemeral storage limit "1Mi". `},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := storageLimitExceeded(tc.containers, tc.usage)
			if got != tc.want || ok != (tc.want != "") {
				t.Errorf("got %q, %v; want %q", got, ok, tc.want)
			}
		})
	}
}

func TestStorageLimited(t *testing.T) {
	pod := &corev1.Pod{Spec: corev1.PodSpec{
		InitContainers: []corev1.Container{limited("init", "1Mi"), limited("side", "1Mi")},
		Containers:     []corev1.Container{limited("app", "1Mi"), limited("free", "")},
	}}
	pod.Spec.InitContainers[1].RestartPolicy = ptr.To(corev1.ContainerRestartPolicyAlways)
	limitedOnes := storageLimited(pod)
	names := make([]string, 0, len(limitedOnes))
	for _, c := range limitedOnes {
		names = append(names, c.Name)
	}
	if strings.Join(names, ",") != "side,app" {
		t.Errorf("storage-limited containers = %v, want the sidecar and the container with a limit", names)
	}
}

func TestDiskUsage(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sub", "data"), make([]byte, 3<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	// A sparse file takes no space: what counts is what is allocated, as for `du`.
	f, _ := os.Create(filepath.Join(dir, "sparse"))
	_ = f.Truncate(1 << 30)
	f.Close()
	got, err := diskUsage(dir)
	if err != nil || got < 3<<20 || got > 4<<20 {
		t.Errorf("diskUsage = %d, %v; want about 3 MiB", got, err)
	}
	if got, err := diskUsage(filepath.Join(dir, "missing")); got != 0 || err != nil {
		t.Errorf("missing directory: %d, %v; want 0 (nothing written yet)", got, err)
	}
}

func TestComputePodStatusEvicted(t *testing.T) {
	pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}}}
	exit := &exitInfo{ExitCode: 137, Signal: 9, Reason: "Error"}
	snap := podSnapshot{NetworkReady: true, Evicted: "Container app exceeded its local ephemeral storage limit \"5Mi\". ",
		Containers: []containerSnapshot{{Name: "app", Process: processState{Starts: 1, Stopped: true, LastExit: exit}}}}
	s := computePodStatus(pod, snap, metav1.Now())
	if s.Phase != corev1.PodFailed || s.Reason != "Evicted" || s.Message != snap.Evicted {
		t.Errorf("phase %s reason %q message %q; want Failed, Evicted and the message", s.Phase, s.Reason, s.Message)
	}
	if c := findCondition(s.Conditions, corev1.PodReady); c == nil || c.Status != corev1.ConditionFalse {
		t.Errorf("Ready = %+v, want False", c)
	}
}

// TestKubeletEvictsAContainerOverItsStorageLimit runs upstream's evicted-pod workload (a shell that writes a
// file to its working directory, in an agnhost container with an ephemeral-storage limit): the pod must end
// Failed, reason Evicted, its process killed, and the Pod object must stay until it is deleted.
func TestKubeletEvictsAContainerOverItsStorageLimit(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for the container's mount namespace")
	}
	const file = "lab-kubelet-eviction-test"
	t.Cleanup(func() { _ = os.Remove("/" + file) }) // where the old kubelet let it land
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "evicted-pod", Namespace: "default", UID: "uid-evicted", ResourceVersion: "1"},
		Spec: corev1.PodSpec{
			NodeName: "node-a", HostNetwork: true, AutomountServiceAccountToken: ptr.To(false),
			Containers: []corev1.Container{{
				Name: "evicted-pod", Image: "registry.k8s.io/e2e-test-images/agnhost:2.56",
				Command: []string{"/bin/sh", "-c", "dd if=/dev/zero of=" + file + " bs=1M count=3; sleep 600"},
				Resources: corev1.ResourceRequirements{
					Limits: corev1.ResourceList{corev1.ResourceEphemeralStorage: resource.MustParse("1Mi")},
				},
			}},
		},
	}
	client := fake.NewClientset(pod)
	dir := t.TempDir()
	cfg := testKubeletConfig(t, dir, "10.250.12.0/24")
	cfg.ImageMap = []ImageMapping{{Match: "e2e-test-images/agnhost", Dir: dir, Entrypoint: "/agnhost"}}
	cfg.StorageCheckInterval = 200 * time.Millisecond
	cfg = cfg.WithDefaults()
	runTestKubelet(t, cfg, client, clusterAccess{Server: "https://127.0.0.1:6443"})

	get := func() *corev1.Pod {
		p, err := client.CoreV1().Pods("default").Get(context.Background(), "evicted-pod", metav1.GetOptions{})
		if err != nil {
			return nil
		}
		return p
	}
	waitFor(t, 20*time.Second, "the pod to be evicted", func() bool {
		p := get()
		return p != nil && p.Status.Phase == corev1.PodFailed
	})
	p := get()
	want := `Container evicted-pod exceeded its local ephemeral storage limit "1Mi". `
	if p.Status.Reason != "Evicted" || p.Status.Message != want {
		t.Errorf("reason %q message %q; want Evicted, %q", p.Status.Reason, p.Status.Message, want)
	}
	if cs := p.Status.ContainerStatuses; len(cs) != 1 || cs[0].State.Terminated == nil || cs[0].State.Terminated.Signal == 0 {
		t.Errorf("container status = %+v, want terminated by a signal", cs)
	}
	time.Sleep(2 * cfg.HeartbeatInterval)
	if p := get(); p == nil || p.Status.Phase != corev1.PodFailed {
		t.Fatalf("the evicted pod did not stay, Failed: %+v", p)
	}
	startDeletion(t, client, "default", "evicted-pod", 0)
	waitFor(t, 10*time.Second, "the deleted evicted pod's object to go", func() bool { return get() == nil })
}
