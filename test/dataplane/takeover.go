package dataplane

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	lbv1alpha1 "github.com/ipvs-operator/ipvs-operator/api/v1alpha1"
	"github.com/ipvs-operator/ipvs-operator/ipvs"
	"github.com/ipvs-operator/ipvs-operator/ipvs/takeover"
)

// TakeoverHooks are what the takeover spec needs of a cluster beyond the Driver: running kube-proxy by hand
// on a node, and installing and removing the operator.
type TakeoverHooks struct {
	// StartKubeProxy runs kube-proxy v1.37.1 in mode ("ipvs", "nftables") on node and returns a function
	// that stops it (SIGTERM: kube-proxy leaves its state in the kernel, as when its DaemonSet is deleted).
	StartKubeProxy func(ctx context.Context, node, mode string) (stop func(context.Context) error, err error)
	// CleanupKubeProxy runs `kube-proxy --cleanup` on node (with mode's configuration): it removes what
	// every mode leaves, and flushes the whole IPVS table.
	CleanupKubeProxy func(ctx context.Context, node, mode string) error
	// Install installs the operator with extra operator arguments and waits until the agents are ready.
	Install func(ctx context.Context, args ...string) error
	// Uninstall removes the install and waits until no agent pod is left.
	Uninstall func(ctx context.Context) error
}

// takeoverWindow is how long each request window of the steady loop lasts.
const takeoverWindow = 2 * time.Second

// RegisterTakeover declares the migration from kube-proxy's IPVS mode as a spec: kube-proxy serves a Service
// (TCP and UDP) on every node under a steady request loop from a pod on each node; kube-proxy stops; the
// operator is installed with --agent-takeover-kube-proxy-ipvs; not one request may fail, and once the agents
// are ready kube-ipvs0, kube-proxy's iptables chains (in iptables-nft's tables and iptables-legacy's, where
// the hooks' kube-proxy wrote them) and its ipsets are gone while the same ClusterIP answers.
// It needs a cluster where no agent runs: call it after RegisterUninstall. It removes its install again.
func RegisterTakeover(driver func() Driver, hooks func() TakeoverHooks) {
	It("takes over from kube-proxy's IPVS mode without failing a request, then removes its leftovers, through an agent restart", func(ctx SpecContext) {
		drv, h := driver(), hooks()
		ns := newNamespace(ctx, drv)
		echoDeployment(ctx, drv, ns, "moving", 2, "", httpPort, udpPort)
		// Not labelled for this proxy: kube-proxy serves it, as every Service of a cluster that migrates.
		svc := newService(ctx, drv, ns, "moving", map[string]string{"app": "moving"}, func(s *corev1.Service) {
			delete(s.Labels, lbv1alpha1.ServiceProxyNameLabel)
		}, svcPort("http", 80, intstr.FromInt32(httpPort.port), corev1.ProtocolTCP),
			svcPort("dns", 53, intstr.FromInt32(udpPort.port), corev1.ProtocolUDP))
		vip := svc.Spec.ClusterIP
		pods := waitPodsReady(ctx, drv, ns, map[string]string{"app": "moving"}, 2)
		clients := map[string]*corev1.Pod{}
		for _, node := range drv.Nodes() {
			clients[node] = clientPod(ctx, drv, ns, "client-"+node, node)
		}

		stops := map[string]func(context.Context) error{}
		for _, node := range drv.Nodes() {
			stop, err := h.StartKubeProxy(ctx, node, "ipvs")
			Expect(err).NotTo(HaveOccurred(), "kube-proxy on %s", node)
			stops[node] = stop
			DeferCleanup(func(ctx SpecContext) { _ = stop(ctx) })
		}
		want := endpoints(podIPs(pods), httpPort.port)
		for _, node := range drv.Nodes() {
			Eventually(ctx, func(g Gomega) {
				table, raw := ipvsSave(ctx, drv, node)
				g.Expect(activeRealServers(virtualServer(table, vip, 80, ipvs.TCP))).To(Equal(want), "kube-proxy's table on %s:\n%s", node, raw)
				out, err := drv.NodeExec(ctx, node, "ip", "-o", "addr", "show", "dev", "kube-ipvs0")
				g.Expect(err).NotTo(HaveOccurred(), out)
				g.Expect(out).To(ContainSubstring(" " + vip + "/32"))
			}).WithTimeout(60 * time.Second).WithPolling(500 * time.Millisecond).Should(Succeed())
		}

		// Where each node's kube-proxy wrote its chains (iptables-nft or iptables-legacy: the hooks may run
		// either): they must be there now, and gone after the takeover.
		backends := map[string]string{}
		for _, node := range drv.Nodes() {
			Eventually(ctx, func(g Gomega) {
				var where []string
				for _, b := range []string{"nft", "legacy"} {
					out, err := drv.NodeExec(ctx, node, "iptables-"+b+"-save", "-t", "nat")
					g.Expect(err).NotTo(HaveOccurred(), out)
					if strings.Contains(out, ":KUBE-SERVICES") {
						where = append(where, "iptables-"+b)
					}
				}
				g.Expect(where).NotTo(BeEmpty(), "kube-proxy's KUBE-SERVICES on %s", node)
				backends[node] = strings.Join(where, "+")
				out, err := drv.NodeExec(ctx, node, "ipset", "list", "-n")
				g.Expect(err).NotTo(HaveOccurred(), out)
				g.Expect(out).To(ContainSubstring("KUBE-CLUSTER-IP"), "kube-proxy's ipsets on %s", node)
			}).WithTimeout(30 * time.Second).WithPolling(500 * time.Millisecond).Should(Succeed())
		}
		GinkgoWriter.Printf("kube-proxy's chains before the takeover: %v\n", backends)

		// The steady loop: back-to-back windows of requests from each node's client pod to both ports.
		finish := steadyLoop(ctx, drv, clients, vip)
		defer finish()

		time.Sleep(2 * takeoverWindow) // kube-proxy alone serves some windows
		tStop := time.Now()
		for _, node := range drv.Nodes() {
			Expect(stops[node](ctx)).To(Succeed(), "stopping kube-proxy on %s", node)
		}
		GinkgoWriter.Printf("kube-proxy stopped on every node in %s\n", time.Since(tStop).Round(time.Millisecond))
		tInstall := time.Now()
		Expect(h.Install(ctx, "--agent-takeover-kube-proxy-ipvs=true")).To(Succeed())
		ready := time.Since(tInstall)
		GinkgoWriter.Printf("agents ready with the takeover %s after the install\n", ready.Round(time.Millisecond))

		// The leftovers go after the agents' first full sync: wait for them, the loop still running.
		tLeft := time.Now()
		for _, node := range drv.Nodes() {
			Eventually(ctx, func(g Gomega) {
				out, err := drv.NodeExec(ctx, node, "ip", "link", "show", "kube-ipvs0")
				g.Expect(err).To(HaveOccurred(), "kube-ipvs0 on %s is still there:\n%s", node, out)
				out, err = drv.NodeExec(ctx, node, "sh", "-c",
					"iptables-nft-save; ip6tables-nft-save; iptables-legacy-save; ip6tables-legacy-save")
				g.Expect(err).NotTo(HaveOccurred(), out)
				for _, chain := range takeover.KubeProxyChains {
					g.Expect(out).NotTo(MatchRegexp(`(?m)^:`+chain.Name+` `), "kube-proxy's chains on %s", node)
				}
				out, err = drv.NodeExec(ctx, node, "ipset", "list", "-n")
				g.Expect(err).NotTo(HaveOccurred(), out)
				g.Expect(strings.TrimSpace(out)).To(BeEmpty(), "kube-proxy's ipsets on %s", node)
			}).WithTimeout(60 * time.Second).WithPolling(500 * time.Millisecond).Should(Succeed())
		}
		GinkgoWriter.Printf("kube-proxy's leftovers gone from every node %s after the agents were ready\n", time.Since(tLeft).Round(time.Millisecond))
		time.Sleep(2 * takeoverWindow) // the agents alone serve some windows
		// A restarted agent, the takeover still on and kube-proxy's leftovers gone, adopts its own state and
		// serves on: the steady loop goes on through it.
		restarted := drv.Nodes()[len(drv.Nodes())-1]
		tRestart := time.Now()
		RestartAgent(ctx, drv, restarted, nil)
		GinkgoWriter.Printf("agent on %s restarted, Ready again %s after its pod's deletion\n", restarted, time.Since(tRestart).Round(time.Millisecond))
		time.Sleep(2 * takeoverWindow)
		windows := finish()

		// Judgement: every window answered in full, by the Service's pods, through the same ClusterIP.
		bad, total := judgeWindows(windows, pods)
		Expect(bad).To(BeEmpty(), "failed requests during the takeover")
		AddReportEntry("takeover", fmt.Sprintf("%d windows, answered requests %v; agents ready %s after the install; kube-proxy's chains were in %v",
			len(windows), total, ready.Round(time.Millisecond), backends),
			ReportEntryVisibilityAlways)
		GinkgoWriter.Printf("takeover: %d windows, answered requests %v, no failure\n", len(windows), total)

		// The agents own it now: the same ClusterIP on their device, their virtual servers.
		for _, node := range drv.Nodes() {
			out, err := drv.NodeExec(ctx, node, "ip", "-o", "addr", "show", "dev", agentInterface)
			Expect(err).NotTo(HaveOccurred(), out)
			Expect(out).To(ContainSubstring(" "+vip+"/32"), "on %s", node)
			table, raw := ipvsSave(ctx, drv, node)
			Expect(activeRealServers(virtualServer(table, vip, 80, ipvs.TCP))).To(Equal(want), "on %s:\n%s", node, raw)
		}

		// kube-proxy in nftables mode flushes the whole IPVS table when it starts (platformCleanup ->
		// ipvs.CleanupLeftovers): how long until the agent's drift canary has it back.
		node := drv.Nodes()[0]
		vsPresent := func() bool {
			table, _ := ipvsSave(ctx, drv, node)
			return virtualServer(table, vip, 80, ipvs.TCP) != nil
		}
		tStart := time.Now()
		stopNFT, err := h.StartKubeProxy(ctx, node, "nftables")
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func(ctx SpecContext) { _ = stopNFT(ctx) })
		// Polled rather than asserted: the flush is kube-proxy's doing, measured here, not a promise of ours.
		var flushed, healed time.Time
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline) && healed.IsZero(); time.Sleep(20 * time.Millisecond) {
			present := vsPresent()
			switch {
			case !present && flushed.IsZero():
				flushed = time.Now()
			case present && !flushed.IsZero():
				healed = time.Now()
			}
		}
		Expect(stopNFT(ctx)).To(Succeed())
		out, err := drv.NodeExec(ctx, node, "sh", "-c", "nft delete table ip kube-proxy; nft delete table ip6 kube-proxy; true")
		Expect(err).NotTo(HaveOccurred(), out)
		heal := fmt.Sprintf("kube-proxy nftables start on %s: no IPVS flush seen within 20s", node)
		if !flushed.IsZero() && healed.IsZero() {
			heal = fmt.Sprintf("kube-proxy nftables start on %s: IPVS flush seen %s after its start; not back within 20s", node, flushed.Sub(tStart).Round(time.Millisecond))
		} else if !flushed.IsZero() {
			heal = fmt.Sprintf("kube-proxy nftables start on %s: IPVS flush seen %s after its start; the agent's virtual server back %s after the flush was seen",
				node, flushed.Sub(tStart).Round(time.Millisecond), healed.Sub(flushed).Round(time.Millisecond))
		}
		AddReportEntry("nftables flush", heal, ReportEntryVisibilityAlways)
		GinkgoWriter.Println(heal)
		Eventually(ctx, vsPresent).WithTimeout(30*time.Second).Should(BeTrue(), "the agent's virtual server on %s", node)

		// Leave no agent and none of its state for the specs that follow (README's uninstall).
		for _, node := range drv.Nodes() {
			out, err := drv.AgentExec(ctx, node, "--cleanup")
			Expect(err).NotTo(HaveOccurred(), "agent --cleanup on %s:\n%s", node, out)
		}
		Expect(h.Uninstall(ctx)).To(Succeed())
	})
}

// steadyLoop sends back-to-back windows of HTTP (port 80) and UDP (port 53) requests to vip from each node's
// client pod until the returned function is called, which waits for the last windows and returns them all.
func steadyLoop(ctx context.Context, drv Driver, clients map[string]*corev1.Pod, vip string) func() []steadyWindow {
	var (
		mu      sync.Mutex
		windows []steadyWindow
		wg      sync.WaitGroup
	)
	stop := make(chan struct{})
	targets := map[string]request{
		"http": {proto: "http", addr: hostPort(vip, 80)},
		"udp":  {proto: "udp", addr: hostPort(vip, 53)},
	}
	for node, pod := range clients {
		for name, req := range targets {
			req.duration, req.interval, req.timeout = takeoverWindow, 100*time.Millisecond, 2*time.Second
			wg.Go(func() {
				defer GinkgoRecover()
				for {
					select {
					case <-stop:
						return
					default:
					}
					w := steadyWindow{node: node, service: vip + " " + name, start: time.Now()}
					out, err := drv.PodExec(ctx, types.NamespacedName{Namespace: pod.Namespace, Name: pod.Name}, req.argv(drv)...)
					w.end = time.Now()
					if err == nil {
						w.out, err = parseOutcome(out)
					} else {
						err = fmt.Errorf("%w: %s", err, out)
					}
					w.err = err
					mu.Lock()
					windows = append(windows, w)
					mu.Unlock()
					if ctx.Err() != nil {
						return
					}
				}
			})
		}
	}
	var once sync.Once
	return func() []steadyWindow {
		once.Do(func() { close(stop) })
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(windows)
	}
}

// judgeWindows lists the windows that failed (an error, a failed request, or no answer at all) and counts the
// answered requests per target; an answer from a pod not in pods fails the spec.
func judgeWindows(windows []steadyWindow, pods []corev1.Pod) (bad []string, total map[string]int) {
	GinkgoHelper()
	total = map[string]int{}
	for _, w := range windows {
		if w.err != nil {
			bad = append(bad, fmt.Sprintf("%s %s at %s: %v", w.node, w.service, w.start.Format("15:04:05.000"), w.err))
			continue
		}
		total[w.service] += w.out.OK
		if w.out.Failed > 0 || w.out.OK == 0 {
			bad = append(bad, fmt.Sprintf("%s %s %s-%s: %s", w.node, w.service, w.start.Format("15:04:05.000"), w.end.Format("15:04:05.000"), w.out))
		}
		for name := range w.out.Answers {
			Expect(podNames(pods)).To(ContainElement(name), "an answer from outside the Service's pods")
		}
	}
	return bad, total
}
