package dataplane

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
)

// RegisterPodDetection registers the specs of the agent's --detect-local-mode, whatever the mode the
// install chose: pods on both nodes and the nodes themselves reach a ClusterIP, the outside host is
// refused at once, and the outside host forging the address of a pod of the node it talks to is dropped.
// The last spec changes the outside host's addresses and routes (`ip`), so only drivers whose outside host
// allows that (the lab) register it.
func RegisterPodDetection(driver func() Driver) {
	Describe("telling the node's pods from the outside", func() {
		var (
			drv          Driver
			nodeA, nodeB string
			ns, vip      string
			pods         []corev1.Pod
		)
		BeforeEach(func(ctx SpecContext) {
			drv = driver()
			nodes := drv.Nodes()
			Expect(len(nodes)).To(BeNumerically(">=", 2), "the specs need two nodes")
			nodeA, nodeB = nodes[0], nodes[1]
			ns = newNamespace(ctx, drv)
			echoDeployment(ctx, drv, ns, "detect", 2, nodeA, httpPort)
			svc := newService(ctx, drv, ns, "detect", map[string]string{"app": "detect"}, nil,
				svcPort("http", 80, intstr.FromInt32(8080), corev1.ProtocolTCP))
			vip = svc.Spec.ClusterIP
			pods = waitPodsReady(ctx, drv, ns, map[string]string{"app": "detect"}, 2)
			for _, node := range drv.Nodes() {
				Eventually(ctx, func(g Gomega) {
					table, raw := ipvsSave(ctx, drv, node)
					vs := virtualServer(table, vip, 80, ipvs.TCP)
					g.Expect(vs).NotTo(BeNil(), "no virtual server %s:80 on %s:\n%s", vip, node, raw)
					g.Expect(activeRealServers(vs)).To(Equal(endpoints(podIPs(pods), 8080)), raw)
				}).WithTimeout(20 * time.Second).WithPolling(200 * time.Millisecond).Should(Succeed())
			}
		})
		AfterEach(func(ctx SpecContext) {
			if !CurrentSpecReport().Failed() {
				return
			}
			for _, node := range drv.Nodes() {
				for _, argv := range [][]string{{"ipvsadm", "-Lnc"}, {"nft", "list", "table", "inet", "ipvs-operator"}} {
					out, err := drv.NodeExec(ctx, node, argv...)
					AddReportEntry(fmt.Sprintf("%s: %s", node, strings.Join(argv, " ")), fmt.Sprintf("%s%v", out, err))
				}
			}
		})

		It("serves pods on the same node and on the other node, and the nodes' host network", func(ctx SpecContext) {
			clients := map[string]*corev1.Pod{nodeA: clientPod(ctx, drv, ns, "client-a", nodeA), nodeB: clientPod(ctx, drv, ns, "client-b", nodeB)}
			waitPodsReady(ctx, drv, ns, map[string]string{"role": "client"}, 2) // clientPod waits for one
			for _, node := range []string{nodeA, nodeB} {
				cli := clients[node]
				got := fromPod(ctx, drv, cli, request{addr: hostPort(vip, 80), count: 4})
				Expect(got.Failed).To(BeZero(), "from a pod on %s: %s", node, got)
				got = fromNode(ctx, drv, node, request{addr: hostPort(vip, 80), count: 4})
				Expect(got.Failed).To(BeZero(), "from %s's host network: %s", node, got)
			}
		})

		It("refuses the outside host at once, and drops it when it forges the address of a pod of the node", func(ctx SpecContext) {
			start := time.Now()
			got := fromOutside(ctx, drv, request{proto: "tcp", addr: hostPort(vip, 80), count: 1, timeout: 3 * time.Second})
			Expect(got.Sequence).To(ConsistOf(ContainSubstring("refused")), got.Raw)
			Expect(time.Since(start)).To(BeNumerically("<", 2*time.Second), "refused by the guard, not left hanging")

			// A free address of node A's pod range (the pods' /24 there), and node A's address.
			podIP := netip.MustParseAddr(pods[0].Status.PodIP)
			forged := netip.AddrFrom4([4]byte{podIP.As4()[0], podIP.As4()[1], podIP.As4()[2], 250}).String()
			nodeIP := internalIP(ctx, drv, nodeA)
			outside := func(argv ...string) {
				GinkgoHelper()
				out, err := drv.OutsideExec(ctx, argv...)
				Expect(err).NotTo(HaveOccurred(), "%s: %s", strings.Join(argv, " "), out)
			}
			outside("ip", "addr", "add", forged+"/32", "dev", "eth0")
			DeferCleanup(func(ctx SpecContext) { _, _ = drv.OutsideExec(ctx, "ip", "addr", "del", forged+"/32", "dev", "eth0") })
			outside("ip", "route", "replace", vip+"/32", "via", nodeIP, "src", forged)
			DeferCleanup(func(ctx SpecContext) { _, _ = drv.OutsideExec(ctx, "ip", "route", "del", vip+"/32") })
			outside("ip", "route", "replace", nodeIP+"/32", "dev", "eth0", "src", forged)
			DeferCleanup(func(ctx SpecContext) { _, _ = drv.OutsideExec(ctx, "ip", "route", "del", nodeIP+"/32") })

			By("control: the forged packets reach node A (to its own address, where no guard applies)")
			_ = fromOutside(ctx, drv, request{proto: "tcp", addr: hostPort(nodeIP, agentHealthPort), count: 1, timeout: time.Second})
			Eventually(ctx, func() (string, error) {
				return drv.NodeExec(ctx, nodeA, "conntrack", "-L", "-p", "tcp", "-s", forged, "-d", nodeIP)
			}).WithTimeout(5*time.Second).Should(ContainSubstring(fmt.Sprintf("dport=%d", agentHealthPort)),
				"the forged SYN never reached node A, so the next step would prove nothing")

			By("the forged packets to the ClusterIP are dropped before IPVS")
			got = fromOutside(ctx, drv, request{proto: "tcp", addr: hostPort(vip, 80), count: 2, timeout: time.Second})
			Expect(got.OK).To(BeZero(), got.Raw)
			conns, err := drv.NodeExec(ctx, nodeA, "ipvsadm", "-Lnc")
			Expect(err).NotTo(HaveOccurred(), conns)
			Expect(conns).NotTo(ContainSubstring(forged+":"), "IPVS took a connection from the forged source")
			tracked, err := drv.NodeExec(ctx, nodeA, "conntrack", "-L", "-p", "tcp", "-s", forged, "-d", vip)
			Expect(err).NotTo(HaveOccurred(), tracked)
			Expect(tracked).NotTo(ContainSubstring("dport=80"), "a forged connection to the ClusterIP passed the guard")
		})
	})
}

// agentHealthPort is the agent's health port, open on every node address (host network).
const agentHealthPort = 10272

// internalIP is a node's InternalIP address.
func internalIP(ctx context.Context, drv Driver, node string) string {
	GinkgoHelper()
	n := &corev1.Node{}
	Expect(drv.Client().Get(ctx, client.ObjectKey{Name: node}, n)).To(Succeed())
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			return a.Address
		}
	}
	Fail("node " + node + " has no InternalIP")
	return ""
}
