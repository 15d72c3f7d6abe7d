package dataplane

import (
	"fmt"
	"slices"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1alpha1 "github.com/ipvs-operator/ipvs-operator/api/v1alpha1"
	"github.com/ipvs-operator/ipvs-operator/controllers/agent"
	"github.com/ipvs-operator/ipvs-operator/ipvs"
)

// servePort is the port the health check scenario's Service targets; readiness stays on httpPort (8080), so
// a pod can stop listening on it (echo's /admin/close-port/9090) and stay Ready.
var servePort = echoPort{"serve", 9090, corev1.ProtocolTCP}

// registerHealthChecks declares the health check spec; drv, ns and cli are read when it runs
// (RegisterScenarios' BeforeEach sets them).
func registerHealthChecks(drvp *Driver, nsp *string, clip **corev1.Pod) {
	Describe("health checks", func() {
		It("takes a Ready pod that stops listening to weight 0 on every node, puts it back, serves all in panic mode, keeps it out through an agent restart, and follows the policy's edits", func(ctx SpecContext) {
			drv, ns, cli := *drvp, *nsp, *clip
			nodes := drv.Nodes()
			nodeB := nodes[1]
			const period, threshold = 2, 2
			policy := &lbv1alpha1.ServicePolicy{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "hc"},
				Spec: lbv1alpha1.ServicePolicySpec{
					Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "hc"}},
					HealthCheck: &lbv1alpha1.HealthCheckSpec{Protocol: lbv1alpha1.HealthCheckTCP, PeriodSeconds: period,
						TimeoutSeconds: 1, UnhealthyThreshold: threshold, HealthyThreshold: 2},
				},
			}
			Expect(drv.Client().Create(ctx, policy)).To(Succeed())
			echoDeployment(ctx, drv, ns, "hc", 2, "", httpPort, servePort)
			svc := newService(ctx, drv, ns, "hc", map[string]string{"app": "hc"}, nil,
				svcPort("serve", 80, intstr.FromInt32(servePort.port), corev1.ProtocolTCP))
			pods := waitPodsReady(ctx, drv, ns, map[string]string{"app": "hc"}, 2)
			vip := svc.Spec.ClusterIP
			sick, well := pods[0], pods[1]
			sickRS, wellRS := hostPort(sick.Status.PodIP, servePort.port), hostPort(well.Status.PodIP, servePort.port)

			// weights are "ip:port w=N" of the virtual server on a node, sorted.
			weights := func(g Gomega, node string) []string {
				table, raw := ipvsSave(ctx, drv, node)
				vs := virtualServer(table, vip, 80, ipvs.TCP)
				g.Expect(vs).NotTo(BeNil(), "no virtual server on %s:\n%s", node, raw)
				return realServers(vs)
			}
			expectWeights := func(timeout time.Duration, want ...string) {
				GinkgoHelper()
				slices.Sort(want)
				for _, node := range nodes {
					Eventually(ctx, func(g Gomega) []string { return weights(g, node) }).
						WithTimeout(timeout).WithPolling(200*time.Millisecond).Should(Equal(want), "real servers on %s", node)
				}
			}
			admin := func(pod corev1.Pod, action string) {
				GinkgoHelper()
				got := fromPod(ctx, drv, cli, request{addr: hostPort(pod.Status.PodIP, httpPort.port) + "/admin/" + action})
				Expect(got.OK).To(Equal(1), "%s on %s: %s", action, pod.Name, got.Raw)
			}
			patch := func(edit func(*lbv1alpha1.HealthCheckSpec) *lbv1alpha1.HealthCheckSpec) {
				GinkgoHelper()
				Expect(drv.Client().Get(ctx, client.ObjectKeyFromObject(policy), policy)).To(Succeed())
				before := policy.DeepCopy()
				policy.Spec.HealthCheck = edit(policy.Spec.HealthCheck)
				// A merge patch, as `kubectl patch` does: the operator writes the policy's status concurrently.
				Expect(drv.Client().Patch(ctx, policy, client.MergeFrom(before))).To(Succeed())
			}
			expectWeights(20*time.Second, sickRS+" w=1", wellRS+" w=1")

			By("a pod stops listening on the served port and stays Ready: weight 0 on every node")
			admin(sick, "close-port/9090")
			start := time.Now()
			// The bound is period x threshold + 1 s; the VM (TCG, 2 vCPUs shared with the control
			// plane) is given twice that, and the time taken is reported.
			expectWeights(2*(period*threshold+1)*time.Second, sickRS+" w=0", wellRS+" w=1")
			AddReportEntry("health check: pod out of rotation on every node after", time.Since(start).String())
			waitPodsReady(ctx, drv, ns, map[string]string{"app": "hc"}, 2)
			got := fromPod(ctx, drv, cli, request{addr: hostPort(vip, 80), count: 10})
			Expect(got.Failed).To(BeZero(), got.String())
			Expect(got.Answers).To(Equal(map[string]int{well.Name: 10}), "every request goes to the healthy pod")
			By("each node reports it in a HealthCheckStatus; the operator sums them into the policy's Degraded condition")
			Eventually(ctx, func(g Gomega) {
				var reports lbv1alpha1.HealthCheckStatusList
				g.Expect(drv.Client().List(ctx, &reports, client.InNamespace(ns))).To(Succeed())
				from := make([]string, 0, len(reports.Items))
				for _, r := range reports.Items {
					g.Expect(r.Report.TakenOut).To(Equal([]lbv1alpha1.TakenOutEndpoint{{Service: "hc", Endpoint: sickRS, Target: "tcp://" + sickRS}}))
					from = append(from, r.Report.Node)
				}
				g.Expect(from).To(ConsistOf(nodes))
				g.Expect(drv.Client().Get(ctx, client.ObjectKeyFromObject(policy), policy)).To(Succeed())
				c := meta.FindStatusCondition(policy.Status.Conditions, lbv1alpha1.ConditionDegraded)
				g.Expect(c).NotTo(BeNil())
				g.Expect(c.Reason).To(Equal(lbv1alpha1.ReasonTakenOut), c.Message)
				g.Expect(c.Message).To(ContainSubstring(fmt.Sprintf("%d real servers are out of rotation on %d nodes", len(nodes), len(nodes))))
			}).WithTimeout(20 * time.Second).WithPolling(500 * time.Millisecond).Should(Succeed())

			By("it listens again: its weight comes back")
			admin(sick, "open-port/9090")
			expectWeights(20*time.Second, sickRS+" w=1", wellRS+" w=1")

			By("the pod unreachable from node A only (a drop on that path): out on node A, in on node B")
			nodeA := nodes[0]
			nft := func(cmd string) {
				GinkgoHelper()
				out, err := drv.NodeExec(ctx, nodeA, "nft", cmd)
				Expect(err).NotTo(HaveOccurred(), "nft %s on %s: %s", cmd, nodeA, out)
			}
			nft("add table inet hc-test")
			DeferCleanup(func(ctx SpecContext) { _, _ = drv.NodeExec(ctx, nodeA, "nft", "delete table inet hc-test") })
			nft("add chain inet hc-test out { type filter hook output priority 0 ; }")
			nft(fmt.Sprintf("add rule inet hc-test out ip daddr %s tcp dport %d drop", sick.Status.PodIP, servePort.port))
			Eventually(ctx, func(g Gomega) []string { return weights(g, nodeA) }).WithTimeout(20*time.Second).
				WithPolling(200*time.Millisecond).Should(ConsistOf(sickRS+" w=0", wellRS+" w=1"), "out on %s", nodeA)
			Consistently(ctx, func(g Gomega) []string { return weights(g, nodeB) }).WithTimeout((period*threshold+2)*time.Second).
				WithPolling(500*time.Millisecond).Should(ConsistOf(sickRS+" w=1", wellRS+" w=1"), "still in on %s", nodeB)
			nft("delete table inet hc-test")
			expectWeights(20*time.Second, sickRS+" w=1", wellRS+" w=1")

			By("a check of a port nobody listens on fails everywhere: panic mode serves both, with an Event")
			patch(func(h *lbv1alpha1.HealthCheckSpec) *lbv1alpha1.HealthCheckSpec {
				h.Port = ptr.To(intstr.FromInt32(9999))
				return h
			})
			Eventually(ctx, func(g Gomega) {
				var list eventsv1.EventList
				g.Expect(drv.Client().List(ctx, &list, client.InNamespace(ns))).To(Succeed())
				panicked := map[string]bool{}
				for _, e := range list.Items {
					if e.Regarding.Kind == "Service" && e.Regarding.Name == "hc" && e.Reason == agent.ReasonHealthPanic {
						panicked[e.ReportingInstance+e.Note] = true
					}
				}
				g.Expect(panicked).To(HaveLen(len(nodes)), "one HealthCheckPanic Event per node")
			}).WithTimeout(30 * time.Second).WithPolling(500 * time.Millisecond).Should(Succeed())
			for _, node := range nodes {
				Consistently(ctx, func(g Gomega) []string { return weights(g, node) }).WithTimeout(3*time.Second).
					WithPolling(500*time.Millisecond).Should(ConsistOf(sickRS+" w=1", wellRS+" w=1"), "panic mode on %s", node)
			}
			got = fromPod(ctx, drv, cli, request{addr: hostPort(vip, 80), count: 10})
			Expect(got.Failed).To(BeZero(), got.String())
			Expect(got.Answers).To(Equal(map[string]int{sick.Name: 5, well.Name: 5}), "panic mode serves both")
			Eventually(ctx, func(g Gomega) {
				g.Expect(drv.Client().Get(ctx, client.ObjectKeyFromObject(policy), policy)).To(Succeed())
				c := meta.FindStatusCondition(policy.Status.Conditions, lbv1alpha1.ConditionDegraded)
				g.Expect(c).NotTo(BeNil())
				g.Expect(c.Reason).To(Equal(lbv1alpha1.ReasonHealthPanic), c.Message)
			}).WithTimeout(20*time.Second).WithPolling(500*time.Millisecond).Should(Succeed(), "the policy's condition says panic mode")

			By("the check fixed, the pod stops listening again: weight 0")
			patch(func(h *lbv1alpha1.HealthCheckSpec) *lbv1alpha1.HealthCheckSpec {
				h.Port = nil
				return h
			})
			admin(sick, "close-port/9090")
			expectWeights(20*time.Second, sickRS+" w=0", wellRS+" w=1")

			By("restarting node B's agent: the pod stays at weight 0 throughout")
			var flaps []string
			stop := watchVirtualServer(ctx, drv, nodeB, vip, 80, ipvs.TCP, func(vs *ipvs.VirtualServer) {
				if rs := realServers(vs); !slices.Contains(rs, sickRS+" w=0") {
					flaps = append(flaps, fmt.Sprintf("%s: %v", time.Now().Format(time.StampMilli), rs))
				}
			})
			restartAgent(ctx, drv, nodeB)
			time.Sleep((period*threshold + 2) * time.Second) // past the point where a fresh start would have flapped
			stop()
			Expect(flaps).To(BeEmpty(), "the unhealthy pod's weight on %s during and after the agent's restart", nodeB)

			By("removing the health check from the policy: readiness alone decides again")
			patch(func(*lbv1alpha1.HealthCheckSpec) *lbv1alpha1.HealthCheckSpec { return nil })
			expectWeights(20*time.Second, sickRS+" w=1", wellRS+" w=1")
			admin(sick, "open-port/9090")
		})
	})
}
