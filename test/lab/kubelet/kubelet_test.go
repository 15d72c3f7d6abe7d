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
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	"github.com/vishvananda/netns"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/clientcmd"
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

// runTestKubelet runs a kubelet with cfg against client in this process's network namespace until the test
// ends.
func runTestKubelet(t *testing.T, cfg Config, client kubernetes.Interface, access clusterAccess) {
	t.Helper()
	ctx, cancel := context.WithCancel(logr.NewContext(context.Background(), testr.New(t)))
	mounts, err := startMountNamespaceRunner(ctx, "")
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	nodeNS, err := netns.Get()
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	ipam, _ := NewIPAM(cfg.PodCIDR)
	k := newKubelet(cfg, testr.New(t), client, access, ipam, mounts, nodeNS)
	done := make(chan error, 1)
	go func() { done <- k.run(ctx) }()
	t.Cleanup(func() {
		cancel()
		_ = <-done
		nodeNS.Close()
	})
}

// readyPod reads a pod and tells whether its Ready condition is true (false if it cannot be read).
func readyPod(client kubernetes.Interface, namespace, name string) (bool, *corev1.Pod) {
	p, err := client.CoreV1().Pods(namespace).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		return false, nil
	}
	c := findCondition(p.Status.Conditions, corev1.PodReady)
	return c != nil && c.Status == corev1.ConditionTrue, p
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
	dir := t.TempDir()
	cfg := testKubeletConfig(t, dir, "10.250.9.0/24")
	cfg.MaxGracePeriod = 500 * time.Millisecond
	cfg = cfg.WithDefaults()
	runTestKubelet(t, cfg, client, clusterAccess{Server: "https://127.0.0.1:6443"})

	podReady := func() (bool, *corev1.Pod) { return readyPod(client, "default", "web-0") }
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
	deleted := startDeletion(t, client, "default", "web-0", 30)
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

// TestKubeletRunsAMappedBinary runs a pod whose image is mapped to a local binary (a symlink to this test
// binary, which then plays an agent): its command and args with $(VAR) expansion, the downward API, a
// ServiceAccount token kubeconfig from the TokenRequest API, and hostPath and token volumes bound by
// `labvm container` where the container expects them.
func TestKubeletRunsAMappedBinary(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for the container's mount namespace")
	}
	self, _ := os.Executable()
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(self, filepath.Join(bin, fakeAgentName)); err != nil {
		t.Fatal(err)
	}
	hostDir := filepath.Join(dir, "hostdir")
	_ = os.MkdirAll(hostDir, 0o755)
	_ = os.WriteFile(filepath.Join(hostDir, "file"), []byte("node-file"), 0o644)
	outDir := filepath.Join(dir, "out")
	_ = os.MkdirAll(outDir, 0o755)
	reportPath, initReportPath := filepath.Join(outDir, "report"), filepath.Join(outDir, "init-report")

	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "agent-x", Namespace: "ipvs-system", UID: "uid-agent", ResourceVersion: "1"},
		Spec: corev1.PodSpec{
			NodeName: "node-a", HostNetwork: true, ServiceAccountName: "agent",
			// The init container must have run, with its own capabilities, before the agent starts.
			InitContainers: []corev1.Container{{
				Name: "load", Image: "ghcr.io/ipvs-operator/ipvs-operator:v0.1.0",
				Command: []string{"/" + fakeAgentName, initReportPath},
				Env:     []corev1.EnvVar{{Name: "FAKE_AGENT_EXIT", Value: "1"}},
				SecurityContext: &corev1.SecurityContext{
					Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"SYS_MODULE"}, Drop: []corev1.Capability{"ALL"}},
				},
				VolumeMounts: []corev1.VolumeMount{{Name: "out", MountPath: outDir}},
			}},
			Containers: []corev1.Container{{
				Name: "agent", Image: "ghcr.io/ipvs-operator/ipvs-operator:v0.1.0",
				Command: []string{"/" + fakeAgentName, reportPath},
				Args:    []string{"--node=$(NODE_NAME)"},
				Env: []corev1.EnvVar{{Name: "NODE_NAME", ValueFrom: &corev1.EnvVarSource{
					FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}}},
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true),
					Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN"}, Drop: []corev1.Capability{"ALL"}},
				},
				VolumeMounts: []corev1.VolumeMount{
					{Name: "host", MountPath: "/host/lab-kubelet-test", ReadOnly: true},
					{Name: "kube-api-access-x", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount", ReadOnly: true},
					{Name: "out", MountPath: outDir},
				},
			}},
			Volumes: []corev1.Volume{
				{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: hostDir}}},
				{Name: "out", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: outDir}}},
				{Name: "kube-api-access-x", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
					Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token"}}}}}},
			},
		},
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "agent", Namespace: "ipvs-system"}}
	client := fake.NewClientset(pod, sa)
	var tokenRequests atomic.Int32
	client.PrependReactor("create", "serviceaccounts", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() != "token" {
			return false, nil, nil
		}
		req := a.(k8stesting.CreateAction).GetObject().(*authenticationv1.TokenRequest)
		if req.Spec.BoundObjectRef == nil || req.Spec.BoundObjectRef.UID != "uid-agent" || *req.Spec.ExpirationSeconds != 3600 {
			t.Errorf("token request = %+v", req.Spec)
		}
		tokenRequests.Add(1)
		return true, &authenticationv1.TokenRequest{Status: authenticationv1.TokenRequestStatus{
			Token: "agent-token", ExpirationTimestamp: metav1.NewTime(time.Now().Add(time.Hour))}}, nil
	})

	cfg := testKubeletConfig(t, dir, "10.250.8.0/24")
	cfg.ImageMap = []ImageMapping{{Match: "ipvs-operator/", Dir: bin}}
	cfg = cfg.WithDefaults()
	runTestKubelet(t, cfg, client, clusterAccess{Server: "https://10.0.2.100:6443", CAData: []byte("CA")})

	waitFor(t, 20*time.Second, "the agent's report", func() bool {
		b, err := os.ReadFile(reportPath)
		return err == nil && strings.HasSuffix(string(b), "\n")
	})
	b, _ := os.ReadFile(reportPath)
	report := string(b)
	files := serviceAccountFilesIn(podDir(cfg.PodDir, pod))
	for _, want := range []string{
		"args=--node=node-a",
		"node=node-a",
		"kubeconfig=" + files.Kubeconfig,
		"service=10.0.2.100:6443",
		"hostpath=node-file",
		"token=agent-token",
		"namespace=ipvs-system",
		"capeff=0000000000001000", // CAP_NET_ADMIN alone
		"nonewprivs=1",
		"rootwritable=false",
	} {
		if !strings.Contains(report, want+"\n") {
			t.Errorf("report lacks %q:\n%s", want, report)
		}
	}
	b, err := os.ReadFile(initReportPath)
	if err != nil {
		t.Fatalf("the init container did not run before the agent: %v", err)
	}
	for _, want := range []string{"capeff=0000000000010000", "nonewprivs=0", "rootwritable=true"} { // CAP_SYS_MODULE alone
		if !strings.Contains(string(b), want+"\n") {
			t.Errorf("init report lacks %q:\n%s", want, b)
		}
	}
	if tokenRequests.Load() != 1 {
		t.Errorf("%d token requests", tokenRequests.Load())
	}
	rc, err := clientcmd.BuildConfigFromFlags("", files.Kubeconfig)
	if err != nil || rc.Host != "https://10.0.2.100:6443" || rc.BearerTokenFile != files.Token {
		t.Errorf("pod kubeconfig: %+v, %v", rc, err)
	}
	waitFor(t, 10*time.Second, "the pod Ready (no probes: ready once started) and Initialized", func() bool {
		p, err := client.CoreV1().Pods("ipvs-system").Get(context.Background(), "agent-x", metav1.GetOptions{})
		c, i := findCondition(p.Status.Conditions, corev1.PodReady), findCondition(p.Status.Conditions, corev1.PodInitialized)
		return err == nil && c != nil && c.Status == corev1.ConditionTrue && i != nil && i.Status == corev1.ConditionTrue &&
			len(p.Status.InitContainerStatuses) == 1 && p.Status.InitContainerStatuses[0].State.Terminated != nil &&
			p.Status.InitContainerStatuses[0].State.Terminated.Reason == "Completed"
	})
}

// TestKubeletRunsASidecar runs a host-network pod whose init container has restartPolicy Always (a
// sidecar, as in upstream's "restartable init containers" Service specs): it keeps serving beside the
// pod's container, the pod is Ready only while the sidecar is, and its status is a running init container.
func TestKubeletRunsASidecar(t *testing.T) {
	sidePort, appPort := freePort(t), freePort(t)
	probe := func(port string) *corev1.Probe {
		return &corev1.Probe{PeriodSeconds: 1, TimeoutSeconds: 1, FailureThreshold: 1, SuccessThreshold: 1,
			ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromString(port)}}}
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-0", Namespace: "default", UID: "uid-web-0", ResourceVersion: "1"},
		Spec: corev1.PodSpec{
			NodeName: "node-a", HostNetwork: true, AutomountServiceAccountToken: ptr.To(false),
			InitContainers: []corev1.Container{{
				Name: "sidecar", Image: "ipvs-operator/echo:lab", RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways),
				Ports:          []corev1.ContainerPort{{Name: "side", ContainerPort: int32(sidePort)}},
				ReadinessProbe: probe("side"),
			}},
			Containers: []corev1.Container{{
				Name: "app", Image: "ipvs-operator/echo:lab",
				Ports: []corev1.ContainerPort{{Name: "app", ContainerPort: int32(appPort)}},
			}},
		},
	}
	client := fake.NewClientset(pod)
	cfg := testKubeletConfig(t, t.TempDir(), "10.250.10.0/24").WithDefaults()
	runTestKubelet(t, cfg, client, clusterAccess{Server: "https://127.0.0.1:6443"})

	podReady := func() (bool, *corev1.Pod) { return readyPod(client, "default", "web-0") }
	waitFor(t, 20*time.Second, "the pod to become Ready", func() bool { ok, _ := podReady(); return ok })
	_, p := podReady()
	if ics := p.Status.InitContainerStatuses; len(ics) != 1 || ics[0].State.Running == nil || !ics[0].Ready || !*ics[0].Started {
		t.Errorf("sidecar status = %+v", ics)
	}
	if cs := p.Status.ContainerStatuses; len(cs) != 1 || cs[0].State.Running == nil {
		t.Errorf("container status = %+v", cs)
	}
	side := fmt.Sprintf("http://127.0.0.1:%d", sidePort)
	for _, url := range []string{side + "/", fmt.Sprintf("http://127.0.0.1:%d/", appPort)} {
		if code, body := getURL(t, url); code != 200 || body != "web-0\n" {
			t.Errorf("%s answered %d %q", url, code, body)
		}
	}
	getURL(t, side+"/admin/fail-readiness")
	waitFor(t, 5*time.Second, "Ready=False with the sidecar not ready", func() bool { ok, p := podReady(); return p != nil && !ok })
	getURL(t, side+"/admin/pass-readiness")
	waitFor(t, 5*time.Second, "Ready=True again", func() bool { ok, _ := podReady(); return ok })
}

// TestKubeletSendsSIGTERMWhenDeletionStarts: as a kubelet, the lab kubelet signals a deleted pod's process at
// once and SIGKILLs it when the (capped) grace period is over; meanwhile the process serves, its readiness
// probe runs and the status follows it, so that a server failing /readyz after SIGTERM (agnhost netexec
// --delay-shutdown, upstream's terminating-endpoint specs) turns the pod unready before it is gone.
func TestKubeletSendsSIGTERMWhenDeletionStarts(t *testing.T) {
	port := freePort(t)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-0", Namespace: "default", UID: "uid-web-0", ResourceVersion: "1"},
		Spec: corev1.PodSpec{
			NodeName: "node-a", HostNetwork: true, AutomountServiceAccountToken: ptr.To(false),
			TerminationGracePeriodSeconds: ptr.To[int64](300),
			Containers: []corev1.Container{{
				Name: "echo", Image: "ipvs-operator/echo:lab",
				// Serves far longer than the grace period after SIGTERM: only SIGKILL ends it.
				Env:   []corev1.EnvVar{{Name: "FAKE_ECHO_SHUTDOWN_DELAY", Value: "1m"}},
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: int32(port)}},
				ReadinessProbe: &corev1.Probe{PeriodSeconds: 1, TimeoutSeconds: 1, FailureThreshold: 1, SuccessThreshold: 1,
					ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromString("http")}}},
			}},
		},
	}
	client := fake.NewClientset(pod)
	cfg := testKubeletConfig(t, t.TempDir(), "10.250.11.0/24")
	cfg.MaxGracePeriod = 4 * time.Second
	cfg = cfg.WithDefaults()
	runTestKubelet(t, cfg, client, clusterAccess{Server: "https://127.0.0.1:6443"})
	waitFor(t, 20*time.Second, "the pod to become Ready", func() bool { ok, _ := readyPod(client, "default", "web-0"); return ok })

	deleted := startDeletion(t, client, "default", "web-0", 300)
	logPath := filepath.Join(cfg.PodLogDir, "default_web-0_echo.log")
	waitFor(t, 2*time.Second, "SIGTERM as the deletion starts", func() bool {
		b, _ := os.ReadFile(logPath)
		return strings.Contains(string(b), fakeEchoTermLine)
	})
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	if code, _ := getURL(t, base+"/"); code != 200 {
		t.Error("the pod stopped serving at SIGTERM")
	}
	// The probe still runs and the status still follows it during the grace period.
	getURL(t, base+"/admin/fail-readiness")
	waitFor(t, 2500*time.Millisecond, "Ready=False while terminating", func() bool {
		ok, p := readyPod(client, "default", "web-0")
		return p != nil && !ok
	})
	waitFor(t, 10*time.Second, "the Pod object to be deleted", func() bool {
		_, err := client.CoreV1().Pods("default").Get(context.Background(), "web-0", metav1.GetOptions{})
		return err != nil
	})
	if d := time.Since(deleted); d < cfg.MaxGracePeriod || d > cfg.MaxGracePeriod+3*time.Second {
		t.Errorf("deleted after %v, want the grace period (%v) and SIGKILL", d, cfg.MaxGracePeriod)
	}
	b, _ := os.ReadFile(logPath)
	if !strings.Contains(string(b), fmt.Sprintf("signal=%d", syscall.SIGKILL)) {
		t.Errorf("the process did not end by SIGKILL:\n%s", b)
	}
}

// TestKubeletRunsPreStopHooksBeforeSIGTERM: as a kubelet, the lab kubelet runs a deleted pod's preStop hook
// first, for up to the pod's whole grace period even where that is over MaxGracePeriod, and sends SIGTERM only
// once the hook has returned. Upstream's "should create endpoints for unready pods" reaches a terminating pod
// through its Service while a 100 s preStop sleep holds it up; SIGTERM at once made it refuse connections.
func TestKubeletRunsPreStopHooksBeforeSIGTERM(t *testing.T) {
	const hookTime = 2 * time.Second
	for i, tc := range []struct {
		name string
		hook func(marker string) *corev1.LifecycleHandler
	}{
		{"exec", func(marker string) *corev1.LifecycleHandler {
			return &corev1.LifecycleHandler{Exec: &corev1.ExecAction{
				Command: []string{"/bin/sh", "-c", "touch " + marker + "; sleep 2"}}}
		}},
		{"sleep", func(string) *corev1.LifecycleHandler {
			return &corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: 2}}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			marker := filepath.Join(dir, "prestop-ran")
			port := freePort(t)
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: "web-0", Namespace: "default", UID: "uid-web-0", ResourceVersion: "1"},
				Spec: corev1.PodSpec{
					NodeName: "node-a", HostNetwork: true, AutomountServiceAccountToken: ptr.To(false),
					TerminationGracePeriodSeconds: ptr.To[int64](100),
					Containers: []corev1.Container{{
						Name: "echo", Image: "ipvs-operator/echo:lab",
						Ports:     []corev1.ContainerPort{{Name: "http", ContainerPort: int32(port)}},
						Lifecycle: &corev1.Lifecycle{PreStop: tc.hook(marker)},
					}},
				},
			}
			client := fake.NewClientset(pod)
			cfg := testKubeletConfig(t, dir, fmt.Sprintf("10.250.%d.0/24", 13+i)).WithDefaults()
			runTestKubelet(t, cfg, client, clusterAccess{Server: "https://127.0.0.1:6443"})
			waitFor(t, 20*time.Second, "the pod to become Ready", func() bool { ok, _ := readyPod(client, "default", "web-0"); return ok })

			deleted := startDeletion(t, client, "default", "web-0", 100)
			logPath := filepath.Join(cfg.PodLogDir, "default_web-0_echo.log")
			// Past MaxGracePeriod, and still inside the hook: no SIGTERM yet, and the server answers.
			time.Sleep(hookTime / 2)
			if b, _ := os.ReadFile(logPath); strings.Contains(string(b), fakeEchoTermLine) {
				t.Fatalf("SIGTERM before the preStop hook returned:\n%s", b)
			}
			if code, _ := getURL(t, fmt.Sprintf("http://127.0.0.1:%d/", port)); code != 200 {
				t.Errorf("the pod stopped serving during its preStop hook: %d", code)
			}
			if tc.name == "exec" {
				if _, err := os.Stat(marker); err != nil {
					t.Errorf("the exec hook did not run: %v", err)
				}
			}
			waitFor(t, 10*time.Second, "the Pod object to be deleted", func() bool {
				_, err := client.CoreV1().Pods("default").Get(context.Background(), "web-0", metav1.GetOptions{})
				return err != nil
			})
			if d := time.Since(deleted); d < hookTime {
				t.Errorf("deleted after %v, before the hook's %v were over", d, hookTime)
			}
			if b, _ := os.ReadFile(logPath); !strings.Contains(string(b), fakeEchoTermLine) {
				t.Errorf("no SIGTERM after the hook:\n%s", b)
			}
		})
	}
}
