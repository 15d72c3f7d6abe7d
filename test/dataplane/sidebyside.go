package dataplane

import (
	"fmt"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1alpha1 "github.com/ipvs-operator/ipvs-operator/api/v1alpha1"
	"github.com/ipvs-operator/ipvs-operator/ipvs"
)

// RegisterSideBySide declares the migration from kube-proxy's iptables mode as a spec: the agents with the
// default scope (labelled Services only) and kube-proxy v1.37.1 in iptables mode run on every node, each
// serving its own Service under a steady request loop; kube-proxy leaves the agent's virtual servers alone;
// then the second Service is labelled and moves over to the agents without a failed request. It needs a
// cluster where no agent runs (after RegisterTakeover) and removes its install again.
func RegisterSideBySide(driver func() Driver, hooks func() TakeoverHooks) {
	It("runs side by side with kube-proxy's iptables mode and moves a Service over by its label without failing a request", func(ctx SpecContext) {
		drv, h := driver(), hooks()
		Expect(h.Install(ctx, "--agent-scope=labelled")).To(Succeed())
		ns := newNamespace(ctx, drv)
		echoDeployment(ctx, drv, ns, "side", 2, "", httpPort, udpPort)
		ports := []corev1.ServicePort{svcPort("http", 80, intstr.FromInt32(httpPort.port), corev1.ProtocolTCP),
			svcPort("dns", 53, intstr.FromInt32(udpPort.port), corev1.ProtocolUDP)}
		ours := newService(ctx, drv, ns, "ours", map[string]string{"app": "side"}, nil, ports...)
		theirs := newService(ctx, drv, ns, "theirs", map[string]string{"app": "side"}, func(s *corev1.Service) {
			delete(s.Labels, lbv1alpha1.ServiceProxyNameLabel)
		}, ports...)
		pods := waitPodsReady(ctx, drv, ns, map[string]string{"app": "side"}, 2)
		clients := map[string]*corev1.Pod{}
		for _, node := range drv.Nodes() {
			clients[node] = clientPod(ctx, drv, ns, "client-"+node, node)
		}
		for _, node := range drv.Nodes() {
			stop, err := h.StartKubeProxy(ctx, node, "iptables")
			Expect(err).NotTo(HaveOccurred(), "kube-proxy on %s", node)
			DeferCleanup(func(ctx SpecContext) {
				Expect(stop(ctx)).To(Succeed())
				// After the agents' own cleanup (below): its flush of IPVS finds nothing of theirs.
				// Its own cleanup is kube-proxy's business, not this spec's: reported, not asserted.
				if err := h.CleanupKubeProxy(ctx, node, "iptables"); err != nil {
					GinkgoWriter.Printf("kube-proxy --cleanup on %s: %v\n", node, err)
				}
			})
		}
		want := endpoints(podIPs(pods), httpPort.port)
		// kubeProxyServes reports whether kube-proxy's iptables rules on node name the ClusterIP.
		kubeProxyServes := func(g Gomega, node, vip string) bool {
			out, err := drv.NodeExec(ctx, node, "iptables-save", "-t", "nat")
			g.Expect(err).NotTo(HaveOccurred(), out)
			return strings.Contains(out, vip+"/32")
		}
		before := map[string][]string{}
		for _, node := range drv.Nodes() {
			Eventually(ctx, func(g Gomega) {
				g.Expect(kubeProxyServes(g, node, theirs.Spec.ClusterIP)).To(BeTrue(), "kube-proxy's rules for theirs on %s", node)
				g.Expect(kubeProxyServes(g, node, ours.Spec.ClusterIP)).To(BeFalse(), "kube-proxy's rules for ours on %s", node)
				table, raw := ipvsSave(ctx, drv, node)
				g.Expect(activeRealServers(virtualServer(table, ours.Spec.ClusterIP, 80, ipvs.TCP))).To(Equal(want), "on %s:\n%s", node, raw)
				before[node] = vsLines(raw, ours.Spec.ClusterIP)
			}).WithTimeout(60 * time.Second).WithPolling(500 * time.Millisecond).Should(Succeed())
		}

		finishOurs := steadyLoop(ctx, drv, clients, ours.Spec.ClusterIP)
		defer finishOurs()
		finishTheirs := steadyLoop(ctx, drv, clients, theirs.Spec.ClusterIP)
		defer finishTheirs()
		time.Sleep(2 * takeoverWindow) // each proxy serves its own Service for some windows

		// The move: label it; kube-proxy drops its rules, the agents program it.
		tMove := time.Now()
		patch := client.MergeFrom(theirs.DeepCopy())
		theirs.Labels[lbv1alpha1.ServiceProxyNameLabel] = lbv1alpha1.ServiceProxyName
		Expect(drv.Client().Patch(ctx, theirs, patch)).To(Succeed())
		for _, node := range drv.Nodes() {
			Eventually(ctx, func(g Gomega) {
				g.Expect(kubeProxyServes(g, node, theirs.Spec.ClusterIP)).To(BeFalse(), "kube-proxy's rules for theirs on %s", node)
				table, raw := ipvsSave(ctx, drv, node)
				g.Expect(activeRealServers(virtualServer(table, theirs.Spec.ClusterIP, 80, ipvs.TCP))).To(Equal(want), "on %s:\n%s", node, raw)
			}).WithTimeout(60 * time.Second).WithPolling(200 * time.Millisecond).Should(Succeed())
		}
		moved := time.Since(tMove)
		time.Sleep(2 * takeoverWindow) // the agents serve both for some windows
		windows := append(finishOurs(), finishTheirs()...)

		bad, total := judgeWindows(windows, pods)
		Expect(bad).To(BeEmpty(), "failed requests side by side with kube-proxy's iptables mode")
		for _, node := range drv.Nodes() {
			_, raw := ipvsSave(ctx, drv, node)
			Expect(vsLines(raw, ours.Spec.ClusterIP)).To(Equal(before[node]), "kube-proxy changed the agent's virtual servers on %s", node)
		}
		report := fmt.Sprintf("%d windows, answered requests %v, no failure; the labelled Service left kube-proxy's rules and was in IPVS on every node %s after the label",
			len(windows), total, moved.Round(time.Millisecond))
		AddReportEntry("side by side", report, ReportEntryVisibilityAlways)
		GinkgoWriter.Println("side by side: " + report)

		for _, node := range drv.Nodes() {
			out, err := drv.AgentExec(ctx, node, "--cleanup")
			Expect(err).NotTo(HaveOccurred(), "agent --cleanup on %s:\n%s", node, out)
		}
		Expect(h.Uninstall(ctx)).To(Succeed())
	})
}
