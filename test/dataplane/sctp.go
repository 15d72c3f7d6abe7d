package dataplane

import (
	"context"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
)

// The SCTP ports an echo pod serves (the line protocol of its TCP ports, over SCTP associations).
var (
	sctpPort    = echoPort{"sctp", 3868, corev1.ProtocolSCTP}
	sctpAltPort = echoPort{"sctp-alt", 3869, corev1.ProtocolSCTP}
)

// expectServedOnEveryNode checks that every node's virtual server for vip:port lists exactly want as its
// active real servers (RegisterScenarios' expectServed, for the specs registered on their own).
func expectServedOnEveryNode(ctx context.Context, drv Driver, vip string, port int32, proto ipvs.Protocol, want []string) {
	GinkgoHelper()
	for _, node := range drv.Nodes() {
		Eventually(ctx, func(g Gomega) {
			table, raw := ipvsSave(ctx, drv, node)
			vs := virtualServer(table, vip, port, proto)
			g.Expect(vs).NotTo(BeNil(), "no virtual server %s %s on %s:\n%s", proto, hostPort(vip, port), node, raw)
			g.Expect(activeRealServers(vs)).To(Equal(want), "real servers on %s:\n%s", node, raw)
		}).WithTimeout(20 * time.Second).WithPolling(200 * time.Millisecond).Should(Succeed())
	}
}

// expectVIPGoneOnEveryNode waits until no node has a virtual server on vip or has vip bound.
func expectVIPGoneOnEveryNode(ctx context.Context, drv Driver, vip string) {
	GinkgoHelper()
	for _, node := range drv.Nodes() {
		Eventually(ctx, func(g Gomega) {
			_, raw := ipvsSave(ctx, drv, node)
			g.Expect(vsLines(raw, savedAddr(vip))).To(BeEmpty(), "virtual servers of %s left on %s", vip, node)
			g.Expect(strings.Fields(boundVIPs(ctx, drv, node))).NotTo(ContainElement(HavePrefix(vip+"/")), "%s left bound on %s", vip, node)
		}).WithTimeout(20 * time.Second).WithPolling(200 * time.Millisecond).Should(Succeed())
	}
}

// RegisterSCTP declares the SCTP spec: a ClusterIP Service of protocol SCTP served through IPVS to real SCTP
// associations, through an agent restart, a port and targetPort edit and the Service's deletion. The nodes
// need the sctp kernel module for the pods' sockets (the lab loads it at boot; IPVS and conntrack have SCTP
// built in on Debian's kernels).
func RegisterSCTP(driver func() Driver) {
	Describe("SCTP", func() {
		It("serves an SCTP ClusterIP through an agent restart with no failure, follows a port and targetPort edit, and forgets it when deleted", func(ctx SpecContext) {
			drv := driver()
			nodes := drv.Nodes()
			Expect(len(nodes)).To(BeNumerically(">=", 2), "the spec needs two nodes")
			nodeA, nodeB := nodes[0], nodes[1]
			ns := newNamespace(ctx, drv)
			cli := clientPod(ctx, drv, ns, "client", nodeB)
			echoDeployment(ctx, drv, ns, "diameter", 2, "", httpPort, sctpPort, sctpAltPort)
			svc := newService(ctx, drv, ns, "diameter", map[string]string{"app": "diameter"}, nil,
				svcPort("diameter", 3868, intstr.FromString(sctpPort.name), corev1.ProtocolSCTP))
			pods := waitPodsReady(ctx, drv, ns, map[string]string{"app": "diameter"}, 2)
			vip := svc.Spec.ClusterIP
			expectServedOnEveryNode(ctx, drv, vip, 3868, ipvs.SCTP, endpoints(podIPs(pods), sctpPort.port))

			By("associations from a pod on node B and from node A's host network reach both pods")
			got := fromPod(ctx, drv, cli, request{proto: "sctp", addr: hostPort(vip, 3868), count: 6})
			Expect(got.Failed).To(BeZero(), got.String())
			Expect(got.Answers).To(HaveLen(2), got.String())
			got = fromNode(ctx, drv, nodeA, request{proto: "sctp", addr: hostPort(vip, 3868), count: 4})
			Expect(got.Failed).To(BeZero(), "from node %s: %s", nodeA, got)
			Expect(got.Answers).To(HaveLen(2), "from node %s: %s", nodeA, got)

			By("node B's agent restarts under a steady SCTP loop from node B's pod")
			got = expectSteadyRestart(ctx, drv, nodeB, vip, func() outcome {
				return fromPod(ctx, drv, cli, request{proto: "sctp", addr: hostPort(vip, 3868), duration: 12 * time.Second,
					interval: 50 * time.Millisecond, timeout: steadyTimeout})
			})
			Expect(got.OK).To(BeNumerically(">", 20), got.String())

			By("port 3868 -> 3869 and targetPort sctp -> sctp-alt, in place")
			Expect(drv.Client().Get(ctx, client.ObjectKeyFromObject(svc), svc)).To(Succeed())
			svc.Spec.Ports[0].Port = 3869
			svc.Spec.Ports[0].TargetPort = intstr.FromString(sctpAltPort.name)
			Expect(drv.Client().Update(ctx, svc)).To(Succeed())
			Expect(svc.Spec.ClusterIP).To(Equal(vip), "an edit keeps the ClusterIP")
			expectServedOnEveryNode(ctx, drv, vip, 3869, ipvs.SCTP, endpoints(podIPs(pods), sctpAltPort.port))
			for _, node := range drv.Nodes() {
				Eventually(ctx, func() *ipvs.VirtualServer {
					table, _ := ipvsSave(ctx, drv, node)
					return virtualServer(table, vip, 3868, ipvs.SCTP)
				}).WithTimeout(20*time.Second).WithPolling(200*time.Millisecond).Should(BeNil(), "the old port's virtual server on %s", node)
			}
			got = fromPod(ctx, drv, cli, request{proto: "sctp", addr: hostPort(vip, 3869), count: 6})
			Expect(got.Failed).To(BeZero(), got.String())
			Expect(got.Answers).To(HaveLen(2), got.String())
			start := time.Now()
			old := fromPod(ctx, drv, cli, request{proto: "sctp", addr: hostPort(vip, 3868), count: 2, timeout: 5 * time.Second})
			Expect(old.OK).To(BeZero(), "the old port is not served any more: %s", old)
			Expect(old.Sequence).To(HaveEach(ContainSubstring("refused")), "refused by the port filter, not lost: %s", old)
			Expect(time.Since(start)).To(BeNumerically("<", 3*time.Second), "refused at once, not after INIT retransmissions")

			By("deleting the Service removes its virtual servers and its ClusterIP from every node")
			Expect(drv.Client().Delete(ctx, svc)).To(Succeed())
			expectVIPGoneOnEveryNode(ctx, drv, vip)
			gone := fromPod(ctx, drv, cli, request{proto: "sctp", addr: hostPort(vip, 3869), count: 1, timeout: 2 * time.Second})
			Expect(gone.OK).To(BeZero(), "a deleted Service is not served: %s", gone)
		})
	})
}
