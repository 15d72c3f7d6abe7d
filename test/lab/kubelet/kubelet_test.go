package kubelet

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	"github.com/vishvananda/netns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func getURL(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestKubeletRunsAHostNetworkPod drives the whole kubelet against a fake API: node registration, a
// host-network pod whose echo container really runs (this test binary plays labvm), a real HTTP readiness
// probe that follows the server's /readyz, and graceful deletion that ends with the Pod object removed.
func TestKubeletRunsAHostNetworkPod(t *testing.T) {
	port := freePort(t)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-0", Namespace: "default", UID: "uid-web-0", ResourceVersion: "1"},
		Spec: corev1.PodSpec{
			NodeName:                      "node-a",
			HostNetwork:                   true,
			AutomountServiceAccountToken:  ptr.To(false),
			TerminationGracePeriodSeconds: ptr.To[int64](30),
			Containers: []corev1.Container{{
				Name: "echo", Image: "ipvs-operator/echo:lab",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: int32(port)}},
				ReadinessProbe: &corev1.Probe{PeriodSeconds: 1, TimeoutSeconds: 1, FailureThreshold: 1, SuccessThreshold: 1,
					ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromString("http")}}},
			}},
		},
	}
	client := fake.NewClientset(pod)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := Config{
		NodeName: "node-a", NodeIP: net.ParseIP("127.0.0.1"), PodCIDR: mustCIDR(t, "10.250.9.0/24"),
		LabvmBinary: self, StateDir: filepath.Join(dir, "state"), PodLogDir: filepath.Join(dir, "logs"),
		HeartbeatInterval: time.Second, MaxGracePeriod: 500 * time.Millisecond, KillGracePeriod: 500 * time.Millisecond,
	}.WithDefaults()
	ctx, cancel := context.WithCancel(logr.NewContext(context.Background(), testr.New(t)))
	mounts, err := startMountNamespaceRunner(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	nodeNS, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer nodeNS.Close()
	ipam, _ := NewIPAM(cfg.PodCIDR)
	k := newKubelet(cfg, testr.New(t), client, clusterAccess{Server: "https://127.0.0.1:6443"}, ipam, mounts, nodeNS)
	runDone := make(chan error, 1)
	go func() { runDone <- k.run(ctx) }()
	defer func() {
		cancel()
		<-runDone
	}()

	podReady := func() (bool, *corev1.Pod) {
		p, err := client.CoreV1().Pods("default").Get(context.Background(), "web-0", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		c := findCondition(p.Status.Conditions, corev1.PodReady)
		return c != nil && c.Status == corev1.ConditionTrue, p
	}
	waitFor(t, 20*time.Second, "the pod to become Ready", func() bool { ok, _ := podReady(); return ok })
	_, p := podReady()
	if p.Status.Phase != corev1.PodRunning || p.Status.PodIP != "127.0.0.1" || p.Status.HostIP != "127.0.0.1" {
		t.Errorf("status = phase %s podIP %s hostIP %s", p.Status.Phase, p.Status.PodIP, p.Status.HostIP)
	}
	cs := p.Status.ContainerStatuses
	if len(cs) != 1 || cs[0].State.Running == nil || !strings.HasPrefix(cs[0].ContainerID, "lab://") || cs[0].Image != "ipvs-operator/echo:lab" {
		t.Errorf("container statuses = %+v", cs)
	}
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	if code, body := getURL(t, base+"/"); code != 200 || body != "web-0\n" {
		t.Errorf("echo answered %d %q", code, body)
	}

	// Readiness follows the server within a probe period or two.
	getURL(t, base+"/admin/fail-readiness")
	waitFor(t, 5*time.Second, "Ready=False", func() bool { ok, p := podReady(); return p != nil && !ok })
	getURL(t, base+"/admin/pass-readiness")
	waitFor(t, 5*time.Second, "Ready=True again", func() bool { ok, _ := podReady(); return ok })

	node, err := client.CoreV1().Nodes().Get(context.Background(), "node-a", metav1.GetOptions{})
	if err != nil || node.Spec.PodCIDR != "10.250.9.0/24" {
		t.Errorf("node = %+v, %v", node, err)
	}
	if _, err := os.Stat(filepath.Join(cfg.PodLogDir, "default_web-0_echo.log")); err != nil {
		t.Errorf("container log: %v", err)
	}

	// Graceful deletion: the pod keeps serving for the grace period, then stops, then the object goes.
	p, _ = client.CoreV1().Pods("default").Get(context.Background(), "web-0", metav1.GetOptions{})
	now := metav1.Now()
	p.DeletionTimestamp, p.DeletionGracePeriodSeconds = &now, ptr.To[int64](30)
	if _, err := client.CoreV1().Pods("default").Update(context.Background(), p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	time.Sleep(200 * time.Millisecond)
	if code, _ := getURL(t, base+"/"); code != 200 {
		t.Error("the pod stopped serving before its grace period")
	}
	waitFor(t, 10*time.Second, "the Pod object to be deleted", func() bool {
		_, err := client.CoreV1().Pods("default").Get(context.Background(), "web-0", metav1.GetOptions{})
		return err != nil
	})
	if d := time.Since(deleted); d < cfg.MaxGracePeriod {
		t.Errorf("deleted after %v, before the grace period", d)
	}
	if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second); err == nil {
		c.Close()
		t.Error("the echo server still listens after the pod was deleted")
	}
}
