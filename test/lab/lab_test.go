//go:build lab

// The lab's smoke suite: boots the whole lab and checks what every other lab suite relies on.
//
//	go test -tags lab ./test/lab/ -v -timeout 60m
//
// With LAB_ATTACH=1 it runs against the lab `go run ./test/lab/cmd/lab up` started instead of its own.
package lab_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ipvs-operator/ipvs-operator/test/lab"
	"github.com/ipvs-operator/ipvs-operator/test/lab/labd"
	"github.com/ipvs-operator/ipvs-operator/test/lab/topology"
)

func TestLab(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "lab smoke suite")
}

var (
	l      *lab.Lab
	failed bool
)

var _ = ReportAfterEach(func(r SpecReport) {
	if r.Failed() {
		failed = true
	}
})

var _ = BeforeSuite(func(ctx SpecContext) {
	if os.Getenv("LAB_ATTACH") == "1" {
		var err error
		l, err = lab.Attach(lab.Options{Out: GinkgoWriter})
		Expect(err).NotTo(HaveOccurred())
		return
	}
	repo, err := lab.RepoRoot()
	Expect(err).NotTo(HaveOccurred())
	_, statErr := os.Stat(filepath.Join(lab.CacheDir(repo), "initramfs", "initramfs.cpio"))
	cold := statErr != nil

	t0 := time.Now()
	_, err = lab.Prepare(ctx, lab.Options{Out: GinkgoWriter})
	Expect(err).NotTo(HaveOccurred())
	prepare := time.Since(t0)

	l, err = lab.Start(ctx, lab.Options{Out: GinkgoWriter})
	Expect(err).NotTo(HaveOccurred())
	AddReportEntry("lab timings", fmt.Sprintf("prepare %s (cold cache: %v); %s", prepare.Round(10*time.Millisecond), cold, l.Timings),
		ReportEntryVisibilityAlways)
	fmt.Printf("lab: prepare %s (cold cache: %v); control plane %s; VM boot to LAB-READY %s; start (warm, excluding prepare) %s\n",
		prepare.Round(10*time.Millisecond), cold, l.Timings.ControlPlane.Round(10*time.Millisecond),
		l.Timings.Boot.Round(10*time.Millisecond), (l.Timings.Total - l.Timings.Prepare).Round(10*time.Millisecond))
}, NodeTimeout(50*time.Minute))

var _ = AfterSuite(func() {
	if l == nil {
		return
	}
	if failed {
		l.Keep()
	}
	t0 := time.Now()
	Expect(l.Stop()).To(Succeed())
	fmt.Printf("lab: stopped in %s\n", time.Since(t0).Round(10*time.Millisecond))
})

// connects reports whether a TCP connection from netns to addr:port succeeds.
func connects(ctx context.Context, netns, addr string, port int) (bool, string) {
	err := l.Dial(ctx, netns, net.JoinHostPort(addr, strconv.Itoa(port)), 3*time.Second)
	if err != nil {
		return false, err.Error()
	}
	return true, ""
}

var _ = Describe("the lab", func() {
	It("has both Nodes Ready", func(ctx SpecContext) {
		var nodes corev1.NodeList
		Expect(l.Client().List(ctx, &nodes)).To(Succeed())
		ready := map[string]bool{}
		for _, n := range nodes.Items {
			for _, c := range n.Status.Conditions {
				if c.Type == corev1.NodeReady {
					ready[n.Name] = c.Status == corev1.ConditionTrue
				}
			}
		}
		Expect(ready).To(Equal(map[string]bool{"node-a": true, "node-b": true}))
		Expect(l.Nodes()).To(Equal([]string{"node-a", "node-b"}))
	})

	It("has kernel IPVS in the nodes", func(ctx SpecContext) {
		for _, n := range l.Nodes() {
			out, err := l.NodeExec(ctx, n, "ipvsadm", "-Ln")
			Expect(err).NotTo(HaveOccurred())
			Expect(out).To(ContainSubstring("IP Virtual Server version"))
		}
	})

	It("has iptables and ipset for kube-proxy's iptables and ipvs modes", func(ctx SpecContext) {
		// The matches and targets those modes write, through iptables-restore as kube-proxy feeds them, and
		// the ipset types of its ipvs mode; each command fails without its module or its extension.
		sh := func(script string) string {
			out, err := l.ExecCombined(ctx, "node-a", "sh", "-ec", script)
			Expect(err).NotTo(HaveOccurred(), out)
			return out
		}
		sh(`ipset create LAB-SMOKE-IPP hash:ip,port
ipset add LAB-SMOKE-IPP 10.96.0.10,tcp:80
ipset create LAB-SMOKE-IPPIP hash:ip,port,ip
ipset create LAB-SMOKE-IPPNET hash:ip,port,net
ipset create LAB-SMOKE-NET hash:net
ipset create LAB-SMOKE-IP hash:ip
ipset create LAB-SMOKE-PORT bitmap:port range 0-65535`)
		sh(`iptables-restore --noflush <<'RULES'
*nat
:LAB-SMOKE - [0:0]
-A LAB-SMOKE -m comment --comment "lab smoke" -m set --match-set LAB-SMOKE-IPP dst,dst -j MARK --or-mark 0x4000
-A LAB-SMOKE -m addrtype --dst-type LOCAL -m conntrack --ctstate NEW -j RETURN
-A LAB-SMOKE -m statistic --mode random --probability 0.5 -m recent --name lab --rcheck --seconds 10 -j RETURN
-A LAB-SMOKE -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.244.1.2:8080
-A LAB-SMOKE -m mark --mark 0x4000/0x4000 -j MASQUERADE
COMMIT
*filter
:LAB-SMOKE - [0:0]
-A LAB-SMOKE -m ipvs --vaddr 10.96.0.0/16 -j ACCEPT
-A LAB-SMOKE -p tcp -m multiport --dports 80,443 -j REJECT --reject-with icmp-port-unreachable
COMMIT
RULES
ip6tables -t nat -N LAB-SMOKE
iptables-legacy -t nat -N LAB-SMOKE`)
		Expect(sh("iptables -t nat -L LAB-SMOKE -n")).To(And(ContainSubstring("match-set LAB-SMOKE-IPP dst,dst"),
			ContainSubstring("MASQUERADE"), ContainSubstring("DNAT")))
		Expect(sh("iptables-save -t filter")).To(ContainSubstring("-m ipvs --vaddr 10.96.0.0/16"))
		Expect(sh("ip6tables -t nat -L -n; iptables-legacy -t nat -L -n")).To(ContainSubstring("LAB-SMOKE"))
		Expect(sh("ipset list LAB-SMOKE-IPP")).To(ContainSubstring("10.96.0.10,tcp:80"))
		Expect(sh("ipset --version")).To(MatchRegexp(`v[0-9]`))
		sh(`iptables -t nat -F LAB-SMOKE; iptables -t nat -X LAB-SMOKE
iptables -t filter -F LAB-SMOKE; iptables -t filter -X LAB-SMOKE
ip6tables -t nat -X LAB-SMOKE; iptables-legacy -t nat -X LAB-SMOKE
for s in IPP IPPIP IPPNET NET IP PORT; do ipset destroy LAB-SMOKE-$s; done`)
		Expect(sh("ipset list -n; iptables-save; iptables-legacy-save")).NotTo(ContainSubstring("LAB-SMOKE"))
	})

	It("reports a failing command with its exit code and output", func(ctx SpecContext) {
		_, err := l.Exec(ctx, "node-a", "sh", "-c", "echo out; echo err >&2; exit 3")
		var ee *lab.ExecError
		Expect(errors.As(err, &ee)).To(BeTrue(), "%v", err)
		Expect(ee.ExitCode).To(Equal(3))
		Expect(ee.Stdout).To(Equal("out\n"))
		Expect(ee.Stderr).To(Equal("err\n"))
		_, err = l.Exec(ctx, "no-such-netns", "true")
		Expect(err).To(HaveOccurred())
	})

	It("kills a command at its timeout, feeds stdin, and runs background processes", func(ctx SpecContext) {
		t0 := time.Now()
		resp, err := l.Run(ctx, labd.ExecRequest{Netns: "node-a", Argv: []string{"sleep", "30"}, TimeoutSeconds: 1})
		Expect(err).NotTo(HaveOccurred())
		Expect(resp.TimedOut).To(BeTrue())
		Expect(time.Since(t0)).To(BeNumerically("<", 10*time.Second))

		resp, err = l.Run(ctx, labd.ExecRequest{Netns: "node-b", Argv: []string{"nft", "-f", "-"},
			Stdin: "table ip lab_smoke {\n\tchain c {\n\t\ttype filter hook input priority 0;\n\t}\n}\n"})
		Expect(err).NotTo(HaveOccurred())
		Expect(resp.ExitCode).To(Equal(0), "%+v", resp)
		out, err := l.Exec(ctx, "node-b", "nft", "list", "tables")
		Expect(err).NotTo(HaveOccurred())
		Expect(out).To(ContainSubstring("lab_smoke"))
		_, err = l.Exec(ctx, "node-b", "nft", "delete", "table", "ip", "lab_smoke")
		Expect(err).NotTo(HaveOccurred())

		pid, err := l.Background(ctx, "outside", "", "sleep", "30")
		Expect(err).NotTo(HaveOccurred())
		running, _, err := l.Wait(ctx, pid, 0)
		Expect(err).NotTo(HaveOccurred())
		Expect(running).To(BeTrue())
		Expect(l.Kill(ctx, pid)).To(Succeed())
		running, code, err := l.Wait(ctx, pid, 5*time.Second)
		Expect(err).NotTo(HaveOccurred())
		Expect(running).To(BeFalse())
		Expect(code).To(Equal(-1)) // killed by a signal
	})

	It("lets the nodes reach the API server and each other, and the outside host only the node network", func(ctx SpecContext) {
		ok, out := connects(ctx, "node-a", topology.GuestAPIServerHost, topology.GuestAPIServerPort)
		Expect(ok).To(BeTrue(), "node-a -> 10.0.2.100:6443: %s", out)

		pid, err := l.Background(ctx, "node-b", lab.GuestLogs+"/smoke-httpd.log", "httpd", "-f", "-p", "18080", "-h", "/etc")
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func(ctx SpecContext) { Expect(l.Kill(ctx, pid)).To(Succeed()) })
		Eventually(func() bool {
			ok, _ := connects(ctx, "node-b", "127.0.0.1", 18080)
			return ok
		}).WithContext(ctx).WithTimeout(10 * time.Second).Should(BeTrue())

		ok, out = connects(ctx, "node-a", "192.168.100.12", 18080)
		Expect(ok).To(BeTrue(), "node-a -> node-b: %s", out)
		out, err = l.NodeExec(ctx, "node-a", "wget", "-q", "-O", "-", "http://192.168.100.12:18080/hosts")
		Expect(err).NotTo(HaveOccurred())
		Expect(out).To(ContainSubstring("localhost"))
		ok, out = connects(ctx, "outside", "192.168.100.12", 18080)
		Expect(ok).To(BeTrue(), "outside -> node-b on the node network: %s", out)

		ok, _ = connects(ctx, "outside", topology.GuestAPIServerHost, topology.GuestAPIServerPort)
		Expect(ok).To(BeFalse(), "outside must not reach the API server")
		ok, _ = connects(ctx, "outside", topology.GuestIP, topology.LabdPort)
		Expect(ok).To(BeFalse(), "outside must not reach labd")
		ok, _ = connects(ctx, "node-a", topology.GuestIP, topology.LabdPort)
		Expect(ok).To(BeFalse(), "nodes must not reach labd")
	})

	It("lets the nodes reach the kubernetes Service's endpoint", func(ctx SpecContext) {
		var slices discoveryv1.EndpointSliceList
		Expect(l.Client().List(ctx, &slices, client.InNamespace("default"),
			client.MatchingLabels{discoveryv1.LabelServiceName: "kubernetes"})).To(Succeed())
		Expect(slices.Items).NotTo(BeEmpty())
		s := slices.Items[0]
		Expect(s.Endpoints).NotTo(BeEmpty())
		Expect(s.Endpoints[0].Addresses).To(ConsistOf(topology.GuestAPIServerHost))
		Expect(s.Ports).NotTo(BeEmpty())
		port := int(*s.Ports[0].Port)
		ok, out := connects(ctx, "node-b", topology.GuestAPIServerHost, port)
		Expect(ok).To(BeTrue(), "node-b -> %s:%d: %s", topology.GuestAPIServerHost, port, out)
	})

	It("runs a pod whose network namespace PodExec reaches", func(ctx SpecContext) {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "lab-smoke-"}}
		Expect(l.Client().Create(ctx, ns)).To(Succeed())
		DeferCleanup(func(ctx SpecContext) { _ = l.Client().Delete(ctx, ns) })
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: "echo"},
			Spec: corev1.PodSpec{
				NodeName:   "node-b",
				Containers: []corev1.Container{{Name: "echo", Image: l.Image()}},
			},
		}
		Expect(l.Client().Create(ctx, pod)).To(Succeed())
		key := types.NamespacedName{Namespace: ns.Name, Name: pod.Name}
		Eventually(func(g Gomega) {
			g.Expect(l.Client().Get(ctx, key, pod)).To(Succeed())
			g.Expect(pod.Status.PodIP).NotTo(BeEmpty())
		}).WithContext(ctx).WithTimeout(60 * time.Second).Should(Succeed())
		Expect(pod.Status.PodIP).To(HavePrefix("10.244.2."))
		out, err := l.PodExec(ctx, key, "ip", "-4", "-o", "addr", "show", "dev", "eth0")
		Expect(err).NotTo(HaveOccurred())
		Expect(out).To(ContainSubstring(pod.Status.PodIP + "/"))
		out, err = l.NodeExec(ctx, "node-a", "sh", "-c", "ping -c1 -W2 "+pod.Status.PodIP+" >/dev/null && echo reachable")
		Expect(err).NotTo(HaveOccurred(), out)
		Expect(strings.TrimSpace(out)).To(Equal("reachable"))
	})

	// The API server runs on the host and the pods in the VM: its egress selector sends pods/proxy through
	// labd (upstream's e2e framework reads pods that way), and the kubelet API (logs) still works through it.
	It("lets the API server reach pods through pods/proxy, on both nodes, and the kubelets' API", func(ctx SpecContext) {
		cs, err := kubernetes.NewForConfig(l.Config())
		Expect(err).NotTo(HaveOccurred())
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "lab-proxy-"}}
		Expect(l.Client().Create(ctx, ns)).To(Succeed())
		DeferCleanup(func(ctx SpecContext) { _ = l.Client().Delete(ctx, ns) })
		for _, node := range []string{"node-a", "node-b"} {
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: "proxied-" + node},
				Spec: corev1.PodSpec{
					NodeName: node,
					Containers: []corev1.Container{{Name: "echo", Image: l.Image(),
						Ports: []corev1.ContainerPort{{ContainerPort: 8080}}}},
				},
			}
			Expect(l.Client().Create(ctx, pod)).To(Succeed())
		}
		for _, node := range []string{"node-a", "node-b"} {
			name := "proxied-" + node
			Eventually(func(g Gomega) {
				body, err := cs.CoreV1().Pods(ns.Name).ProxyGet("http", name, "8080", "/", nil).DoRaw(ctx)
				g.Expect(err).NotTo(HaveOccurred(), "pods/%s:8080/proxy/: %s", name, body)
				g.Expect(strings.TrimSpace(string(body))).To(Equal(name))
			}).WithContext(ctx).WithTimeout(60*time.Second).WithPolling(time.Second).Should(Succeed(), "GET /api/v1/namespaces/%s/pods/%s:8080/proxy/", ns.Name, name)
			_, err := cs.CoreV1().Pods(ns.Name).GetLogs(name, &corev1.PodLogOptions{}).DoRaw(ctx)
			Expect(err).NotTo(HaveOccurred(), "logs of %s through the kubelet API", name)
		}
	})
})
