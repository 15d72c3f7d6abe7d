package dataplane

import (
	"context"
	"fmt"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
)

// agentLock is the abstract socket that is the agent's per-node lock (controllers/agent/nodelock).
const agentLock = "@ipvs-operator-agent"

// settleAfterCleanup is how long the uninstall spec waits for anything to come back: longer than the audit
// period the suites render agents with (--agent-audit-period=10s).
const settleAfterCleanup = 15 * time.Second

// RegisterUninstall declares the README's uninstall as specs: the one-agent-per-node lock, then `/agent
// --cleanup` in every agent pod while the agents run, then the deletion of the install, with every node
// checked to hold no `ipvs0`, no nftables table and no virtual server of the agent's, while a hand-made one
// survives. It removes the install: call it last, after RegisterScenarios, in the same Ordered container.
func RegisterUninstall(driver func() Driver) {
	Describe("uninstall", Ordered, func() {
		const foreign = "198.51.100.77:8000"
		var (
			drv Driver
			ns  string
			vip string
		)
		BeforeAll(func(ctx SpecContext) {
			drv = driver()
			ns = newNamespace(ctx, drv)
			echoDeployment(ctx, drv, ns, "bye", 2, "", httpPort)
			svc := newService(ctx, drv, ns, "bye", map[string]string{"app": "bye"}, nil,
				svcPort("http", 80, intstr.FromInt32(8080), corev1.ProtocolTCP))
			pods := waitPodsReady(ctx, drv, ns, map[string]string{"app": "bye"}, 2)
			vip = svc.Spec.ClusterIP
			want := endpoints(podIPs(pods), 8080)
			for _, node := range drv.Nodes() {
				Eventually(ctx, func(g Gomega) {
					table, raw := ipvsSave(ctx, drv, node)
					g.Expect(activeRealServers(virtualServer(table, vip, 80, ipvs.TCP))).To(Equal(want), "on %s:\n%s", node, raw)
				}).WithTimeout(20 * time.Second).WithPolling(200 * time.Millisecond).Should(Succeed())
				// Someone's own IPVS service, on an address that is not the agent's: it must survive.
				out, err := drv.NodeExec(ctx, node, "ipvsadm", "-A", "-t", foreign, "-s", "wlc")
				Expect(err).NotTo(HaveOccurred(), out)
				out, err = drv.NodeExec(ctx, node, "ipvsadm", "-a", "-t", foreign, "-r", "198.51.100.78:8000", "-m", "-w", "3")
				Expect(err).NotTo(HaveOccurred(), out)
				DeferCleanup(func(ctx SpecContext) { _, _ = drv.NodeExec(ctx, node, "ipvsadm", "-D", "-t", foreign) })
			}
		})
		AfterEach(func(ctx SpecContext) {
			if !CurrentSpecReport().Failed() {
				return
			}
			for _, node := range drv.Nodes() {
				for _, argv := range [][]string{{"ipvsadm", "-Ln"}, {"ip", "-o", "addr", "show", "dev", agentInterface},
					{"nft", "list", "table", "inet", "ipvs-operator"}} {
					out, err := drv.NodeExec(ctx, node, argv...)
					AddReportEntry(fmt.Sprintf("%s: %s", node, strings.Join(argv, " ")), fmt.Sprintf("%s%v", out, err))
				}
			}
		})

		// expectClean checks a node holds nothing of the agent's, and still holds the hand-made service.
		expectClean := func(ctx context.Context, node string) {
			GinkgoHelper()
			out, err := drv.NodeExec(ctx, node, "ip", "link", "show", agentInterface)
			Expect(err).To(HaveOccurred(), "%s on %s is still there:\n%s", agentInterface, node, out)
			// iproute2, or busybox's ip applet: the failure must be the absence, not some other error.
			Expect(out).To(MatchRegexp(`Device "%s" does not exist|can't find device '?%s'?`, agentInterface, agentInterface),
				"ip link show %s on %s", agentInterface, node)
			out, err = drv.NodeExec(ctx, node, "nft", "list", "table", "inet", "ipvs-operator")
			Expect(err).To(HaveOccurred(), "the nftables table on %s is still there:\n%s", node, out)
			Expect(out).To(ContainSubstring("No such file or directory"), "nft list table inet ipvs-operator on %s", node)
			table, raw := ipvsSave(ctx, drv, node)
			Expect(vsLines(raw, vip)).To(BeEmpty(), "virtual servers on the Service's ClusterIP on %s", node)
			Expect(raw).To(ContainSubstring("-A -t "+foreign+" -s wlc"), "the hand-made service on %s", node)
			Expect(raw).To(ContainSubstring("-a -t "+foreign+" -r 198.51.100.78:8000 -m -w 3"), "its real server on %s", node)
			Expect(table).To(HaveLen(1), "only the hand-made service is left on %s:\n%s", node, raw)
		}

		It("refuses a second agent on a node, naming the one that runs, and leaves the node's state alone", func(ctx SpecContext) {
			for _, node := range drv.Nodes() {
				// Only this spec's Service is compared: Services of earlier specs may still be draining
				// (weights going to 0, then deletion), which is the running agent's doing.
				_, raw := ipvsSave(ctx, drv, node)
				before := vsLines(raw, vip)
				Expect(before).NotTo(BeEmpty(), "the Service's virtual server on %s", node)
				out, err := drv.AgentExec(ctx, node, "--node-name="+node)
				Expect(err).To(HaveOccurred(), "a second agent on %s started:\n%s", node, out)
				Expect(out).To(MatchRegexp(`another agent holds the per-node lock %s \(pid [1-9][0-9]*\)`, agentLock), "on %s", node)
				_, raw = ipvsSave(ctx, drv, node)
				Expect(vsLines(raw, vip)).To(Equal(before), "the refused agent changed the IPVS table on %s", node)
			}
		})

		It("removes everything the agent owns on every node, and the running agents put nothing back", func(ctx SpecContext) {
			// README, Uninstall, step 1: `/agent --cleanup` in every agent pod, the agents still running.
			for _, node := range drv.Nodes() {
				out, err := drv.AgentExec(ctx, node, "--cleanup")
				GinkgoWriter.Printf("%s: agent --cleanup:\n%s\n", node, out)
				Expect(err).NotTo(HaveOccurred(), "agent --cleanup on %s:\n%s", node, out)
				Expect(out).To(ContainSubstring("Asking the running agent (pid "), "on %s", node)
				Expect(out).To(ContainSubstring("removed virtual server -t "+vip+":80\n"), "on %s", node)
				Expect(out).To(ContainSubstring("removed interface "+agentInterface), "on %s", node)
				Expect(out).To(ContainSubstring("nftables table inet ipvs-operator is gone"), "on %s", node)
				expectSysctlsRestored(ctx, drv, node, out)
			}
			for _, node := range drv.Nodes() {
				expectClean(ctx, node)
			}
			// The halted agents say so: not ready.
			Eventually(ctx, func(g Gomega) {
				for _, p := range agentPods(ctx, g, drv) {
					g.Expect(podReady(&p)).To(BeFalse(), "agent %s on %s is still ready", p.Name, p.Spec.NodeName)
				}
			}).WithTimeout(30 * time.Second).WithPolling(time.Second).Should(Succeed())

			// The cluster goes on changing: more endpoints, a new Service. And longer than an audit period
			// passes: an agent that still programmed would put it all back.
			dep := &appsv1.Deployment{}
			Expect(drv.Client().Get(ctx, client.ObjectKey{Namespace: ns, Name: "bye"}, dep)).To(Succeed())
			dep.Spec.Replicas = ptr.To[int32](3)
			Expect(drv.Client().Update(ctx, dep)).To(Succeed())
			newService(ctx, drv, ns, "late", map[string]string{"app": "bye"}, nil,
				svcPort("http", 81, intstr.FromInt32(8080), corev1.ProtocolTCP))
			time.Sleep(settleAfterCleanup)
			for _, node := range drv.Nodes() {
				expectClean(ctx, node)
			}
			// Running it again is harmless and finds nothing left.
			out, err := drv.AgentExec(ctx, drv.Nodes()[0], "--cleanup")
			Expect(err).NotTo(HaveOccurred(), out)
			Expect(out).To(ContainSubstring("no virtual server of the agent's was left"))
		})

		It("leaves nothing behind once the install is deleted", func(ctx SpecContext) {
			// README, Uninstall, step 2 (`make undeploy` deletes the namespace with the operator and the agents).
			nsObj := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: AgentNamespace}}
			Expect(client.IgnoreNotFound(drv.Client().Delete(ctx, nsObj))).To(Succeed())
			Eventually(ctx, func(g Gomega) {
				g.Expect(agentPods(ctx, g, drv)).To(BeEmpty(), "agent pods left")
			}).WithTimeout(3 * time.Minute).WithPolling(time.Second).Should(Succeed())
			for _, node := range drv.Nodes() {
				expectClean(ctx, node)
			}
		})
	})
}

// agentPods lists the agent pods.
func agentPods(ctx context.Context, g Gomega, drv Driver) []corev1.Pod {
	list := &corev1.PodList{}
	g.Expect(drv.Client().List(ctx, list, client.InNamespace(AgentNamespace), client.MatchingLabels{agentLabel: agentLabelVal})).To(Succeed())
	return list.Items
}

// expectSysctlsRestored checks what `agent --cleanup` says it restored ("restored sysctl NAME: a -> b") against
// the node's values, and that forwarding, which the node's pod network needs, was left on.
func expectSysctlsRestored(ctx context.Context, drv Driver, node, out string) {
	GinkgoHelper()
	for _, line := range strings.Split(out, "\n") {
		rest, ok := strings.CutPrefix(line, "restored sysctl ")
		if !ok {
			continue
		}
		name, values, _ := strings.Cut(rest, ": ")
		_, want, _ := strings.Cut(values, " -> ")
		Expect(name).NotTo(ContainSubstring("forward"), "cleanup turned forwarding off on %s: %s", node, line)
		got, err := drv.NodeExec(ctx, node, "cat", "/proc/sys/"+strings.ReplaceAll(name, ".", "/"))
		Expect(err).NotTo(HaveOccurred(), got)
		Expect(strings.TrimSpace(got)).To(Equal(want), "%s on %s after cleanup said %q", name, node, line)
	}
	got, err := drv.NodeExec(ctx, node, "cat", "/proc/sys/net/ipv4/ip_forward")
	Expect(err).NotTo(HaveOccurred(), got)
	Expect(strings.TrimSpace(got)).To(Equal("1"), "ip_forward on %s after cleanup", node)
}
