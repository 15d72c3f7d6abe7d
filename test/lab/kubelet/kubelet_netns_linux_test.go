package kubelet

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"
)

const childEnv = "LAB_KUBELET_NETNS_CHILD_PREFIX"

// TestKubeletRunsPodsInNetns reproduces the guest's setup on the host: a throwaway "node" namespace with a
// pod bridge, and this test binary started in it with `ip netns exec` (so, as in the VM, the kubelet has a
// private mount namespace and must name pod namespaces in the host's). The child half below runs the kubelet.
func TestKubeletRunsPodsInNetns(t *testing.T) {
	if os.Getenv(childEnv) != "" {
		t.Skip("child process")
	}
	ctx := context.Background()
	mgr, node := newTestNetns(ctx, t, "node")
	t.Cleanup(func() { // the pods' namespaces too
		names, _ := mgr.List()
		for _, n := range names {
			_ = mgr.Delete(ctx, n)
		}
	})
	nodeNS, err := netns.GetFromPath(mgr.Path(node))
	if err != nil {
		t.Fatal(err)
	}
	defer nodeNS.Close()
	h, err := netlink.NewHandleAt(nodeNS)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	lo, _ := h.LinkByName("lo")
	_ = h.LinkSetUp(lo)
	bridge := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "cbr0"}}
	if err := h.LinkAdd(bridge); err != nil {
		t.Fatal(err)
	}
	_ = h.AddrAdd(bridge, &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP("10.250.2.1"), Mask: net.CIDRMask(24, 32)}})
	_ = h.LinkSetUp(bridge)

	ipCmd, prefix := mgr.ipCommand, mgr.prefix
	self, _ := os.Executable()
	cctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, ipCmd, "netns", "exec", node, self, "-test.run", "^TestKubeletPodNetnsChild$", "-test.v", "-test.count=1")
	// The child joins this process's mount namespace, as the guest's kubelet joins PID 1's (which a test
	// on a shared host may not open).
	cmd.Env = append(os.Environ(), childEnv+"="+prefix, "LAB_KUBELET_TEST_IP="+ipCmd,
		fmt.Sprintf("LAB_KUBELET_TEST_MNTNS=/proc/%d/ns/mnt", os.Getpid()))
	out, err := cmd.CombinedOutput()
	t.Logf("child output:\n%s", out)
	if err != nil {
		t.Fatalf("child failed: %v", err)
	}
	if !strings.Contains(string(out), "--- PASS: TestKubeletPodNetnsChild") {
		t.Fatal("child test did not pass")
	}
	// The kubelet named web-b's namespace in the host mount namespace: it is visible here, after the child's
	// private mount namespace is gone. web-a was deleted and its namespace with it.
	// (The file alone would be visible anyway: only the bind mount over it makes it a namespace.)
	var fs unix.Statfs_t
	if err := unix.Statfs(mgr.Path(prefix+"pod-default-web-b"), &fs); err != nil || fs.Type != unix.NSFS_MAGIC {
		t.Errorf("web-b's network namespace is not mounted outside the kubelet's mount namespace (statfs type %#x, %v)", fs.Type, err)
	}
	if mgr.Exists(prefix + "pod-default-web-a") {
		t.Error("web-a's network namespace survived its deletion")
	}
}

func TestKubeletPodNetnsChild(t *testing.T) {
	prefix := os.Getenv(childEnv)
	if prefix == "" {
		t.Skip("runs only inside TestKubeletRunsPodsInNetns")
	}
	self, _ := os.Executable()
	dir := t.TempDir()
	cfg := Config{
		NodeName: "node-a", NodeIP: net.ParseIP("10.250.2.1"), PodCIDR: mustCIDR(t, "10.250.2.0/24"), Bridge: "cbr0",
		LabvmBinary: self, IPCommand: os.Getenv("LAB_KUBELET_TEST_IP"), NetnsPrefix: prefix + "pod-",
		HostMountNamespace: os.Getenv("LAB_KUBELET_TEST_MNTNS"),
		StateDir:           filepath.Join(dir, "state"), PodLogDir: filepath.Join(dir, "logs"),
		HeartbeatInterval: time.Second, MaxGracePeriod: 300 * time.Millisecond, KillGracePeriod: 500 * time.Millisecond,
	}.WithDefaults()
	echoPod := func(name string) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("uid-" + name), ResourceVersion: "1"},
			Spec: corev1.PodSpec{NodeName: "node-a", AutomountServiceAccountToken: ptr.To(false),
				Containers: []corev1.Container{{Name: "echo", Image: "ipvs-operator/echo:lab",
					Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}, {ContainerPort: 5353, Protocol: corev1.ProtocolUDP}},
					ReadinessProbe: &corev1.Probe{PeriodSeconds: 1, FailureThreshold: 1, SuccessThreshold: 1, TimeoutSeconds: 1,
						ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromString("http")}}},
					LivenessProbe: &corev1.Probe{PeriodSeconds: 1, FailureThreshold: 3, SuccessThreshold: 1, TimeoutSeconds: 2,
						ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"true"}}}},
				}}},
		}
	}
	client := fake.NewClientset(echoPod("web-a"), echoPod("web-b"))
	ctx, cancel := context.WithCancel(logr.NewContext(context.Background(), testr.New(t)))
	mounts, err := startMountNamespaceRunner(ctx, cfg.HostMountNamespace)
	if err != nil {
		t.Fatal(err)
	}
	nodeNS, _ := netns.Get()
	defer nodeNS.Close()
	ipam, _ := NewIPAM(cfg.PodCIDR)
	k := newKubelet(cfg, testr.New(t), client, clusterAccess{Server: "https://127.0.0.1:6443"}, ipam, mounts, nodeNS)
	done := make(chan error, 1)
	go func() { done <- k.run(ctx) }()
	defer func() { cancel(); _ = <-done }()

	readyIP := func(name string) string {
		p, err := client.CoreV1().Pods("default").Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return ""
		}
		if c := findCondition(p.Status.Conditions, corev1.PodReady); c == nil || c.Status != corev1.ConditionTrue {
			return ""
		}
		return p.Status.PodIP
	}
	waitFor(t, 30*time.Second, "both pods Ready", func() bool { return readyIP("web-a") != "" && readyIP("web-b") != "" })
	ipA, ipB := readyIP("web-a"), readyIP("web-b")
	if !strings.HasPrefix(ipA, "10.250.2.") || ipA == ipB || ipA == "10.250.2.1" {
		t.Fatalf("pod IPs %s %s", ipA, ipB)
	}
	// From the node: each pod answers with its name on its own IP (the server runs in the pod's namespace).
	for name, ip := range map[string]string{"web-a": ipA, "web-b": ipB} {
		resp, err := (&http.Client{Timeout: 3 * time.Second}).Get("http://" + ip + ":8080/")
		if err != nil {
			t.Fatalf("GET %s: %v", name, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != name+"\n" {
			t.Errorf("%s answered %q", name, b)
		}
	}
	// Pod to pod, from inside web-a's namespace.
	podA, err := netns.GetFromPath(filepath.Join(cfg.NetnsDir, cfg.NetnsPrefix+"default-web-a"))
	if err != nil {
		t.Fatal(err)
	}
	var answer string
	inNetns(t, podA, func() {
		c, derr := net.DialTimeout("tcp", ipB+":8080", 3*time.Second)
		if derr != nil {
			answer = derr.Error()
			return
		}
		defer c.Close()
		fmt.Fprintf(c, "hi\n")
		buf := make([]byte, 64)
		n, _ := c.Read(buf)
		answer = string(buf[:n])
	})
	podA.Close()
	if answer != "web-b\n" {
		t.Errorf("web-a -> web-b: %q", answer)
	}
	if on, err := k.network.hairpinOn(hostVethName(cfg.NetnsPrefix + "default-web-a")); err != nil || !on {
		t.Errorf("hairpin = %v, %v", on, err)
	}

	// Deleting web-a removes its namespace, veth and address, then the object.
	startDeletion(t, client, "default", "web-a", 0)
	waitFor(t, 10*time.Second, "web-a deleted", func() bool {
		_, err := client.CoreV1().Pods("default").Get(context.Background(), "web-a", metav1.GetOptions{})
		return err != nil
	})
	if k.netns.Exists(cfg.NetnsPrefix + "default-web-a") {
		t.Error("web-a's namespace still exists")
	}
	if _, ok := k.ipam.Lookup("uid-web-a"); ok {
		t.Error("web-a's address was not released")
	}
	// Liveness (exec `true` in the pod) never restarted web-b.
	b, _ := client.CoreV1().Pods("default").Get(context.Background(), "web-b", metav1.GetOptions{})
	if rc := b.Status.ContainerStatuses[0].RestartCount; rc != 0 {
		t.Errorf("web-b restarted %d times", rc)
	}
}
