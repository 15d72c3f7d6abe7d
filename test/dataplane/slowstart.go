package dataplane

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1alpha1 "github.com/ipvs-operator/ipvs-operator/api/v1alpha1"
	"github.com/ipvs-operator/ipvs-operator/ipvs"
)

// registerSlowStart declares the slow start spec; drv and ns are read when it runs (RegisterScenarios'
// BeforeEach sets them).
func registerSlowStart(drvp *Driver, nsp *string) {
	Describe("slow start", func() {
		It("ramps a new pod's weight up over the window on every node, follows an edit of the window, continues through an agent restart, and goes full without the policy", func(ctx SpecContext) {
			drv, ns := *drvp, *nsp
			nodes := drv.Nodes()
			nodeA, nodeB := nodes[0], nodes[1]
			sel := map[string]string{"app": "ss"}
			policy := &lbv1alpha1.ServicePolicy{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "ss"},
				Spec: lbv1alpha1.ServicePolicySpec{
					Selector: &metav1.LabelSelector{MatchLabels: sel}, Scheduler: lbv1alpha1.SchedulerWeightedRoundRobin,
					SlowStart: &lbv1alpha1.SlowStartSpec{WindowSeconds: 20},
				},
			}
			Expect(drv.Client().Create(ctx, policy)).To(Succeed())
			echoDeployment(ctx, drv, ns, "ss", 1, "", httpPort)
			svc := newService(ctx, drv, ns, "ss", sel, nil, svcPort("http", 80, intstr.FromInt32(httpPort.port), corev1.ProtocolTCP))
			vip := svc.Spec.ClusterIP

			// weights maps "ip:port" to the weight on node, from `ipvsadm -Sn`.
			weights := func(g Gomega, node string) map[string]int {
				table, raw := ipvsSave(ctx, drv, node)
				vs := virtualServer(table, vip, 80, ipvs.TCP)
				g.Expect(vs).NotTo(BeNil(), "no virtual server on %s:\n%s", node, raw)
				out := map[string]int{}
				for _, d := range vs.Destinations {
					out[d.DestinationKey.String()] = d.Weight
				}
				return out
			}
			scale := func(n int32) []corev1.Pod {
				GinkgoHelper()
				d := &appsv1.Deployment{}
				Expect(drv.Client().Get(ctx, client.ObjectKey{Namespace: ns, Name: "ss"}, d)).To(Succeed())
				before := d.DeepCopy()
				d.Spec.Replicas = ptr.To(n)
				Expect(drv.Client().Patch(ctx, d, client.MergeFrom(before))).To(Succeed())
				return waitPodsReady(ctx, drv, ns, sel, int(n))
			}
			editWindow := func(seconds int32) {
				GinkgoHelper()
				Expect(drv.Client().Get(ctx, client.ObjectKeyFromObject(policy), policy)).To(Succeed())
				before := policy.DeepCopy()
				policy.Spec.SlowStart.WindowSeconds = seconds
				// A merge patch, as `kubectl patch` does: the operator writes the policy's status concurrently.
				Expect(drv.Client().Patch(ctx, policy, client.MergeFrom(before))).To(Succeed())
			}
			// ramp polls node's table until rs is at full weight or timeout, and returns the distinct weights
			// rs had, in order; others must stay at full weight throughout (no flapping).
			ramp := func(node, rs string, others []string, timeout time.Duration) ([]int, time.Duration) {
				GinkgoHelper()
				var seen []int
				start := time.Now()
				Eventually(ctx, func(g Gomega) int {
					w := weights(g, node)
					for _, o := range others {
						g.Expect(w).To(HaveKeyWithValue(o, 100), "an endpoint at full weight moved on %s", node)
					}
					cur, ok := w[rs]
					g.Expect(ok).To(BeTrue(), "%s not on %s", rs, node)
					if len(seen) == 0 || seen[len(seen)-1] != cur {
						seen = append(seen, cur)
					}
					return cur
				}).WithTimeout(timeout).WithPolling(250 * time.Millisecond).Should(Equal(100))
				return seen, time.Since(start)
			}
			rising := func(seen []int, what string) {
				GinkgoHelper()
				for i := 1; i < len(seen); i++ {
					Expect(seen[i]).To(BeNumerically(">", seen[i-1]), "%s: the weight only rises, saw %v", what, seen)
				}
			}

			first := waitPodsReady(ctx, drv, ns, sel, 1)[0]
			firstRS := hostPort(first.Status.PodIP, httpPort.port)
			By("the Service's first pod is at full weight at once: nothing to ramp against")
			for _, node := range nodes {
				Eventually(ctx, func(g Gomega) map[string]int { return weights(g, node) }).WithTimeout(20*time.Second).
					Should(Equal(map[string]int{firstRS: 100}), "on %s", node)
			}

			By("a second pod: its weight starts at a tenth and rises to full over the 20 s window on every node")
			pods := scale(2)
			second := pods[slices.IndexFunc(pods, func(p corev1.Pod) bool { return p.Name != first.Name })]
			secondRS := hostPort(second.Status.PodIP, httpPort.port)
			var (
				wg     sync.WaitGroup
				mu     sync.Mutex
				seenOn = map[string][]int{}
				tookOn = map[string]time.Duration{}
			)
			for _, node := range nodes {
				wg.Go(func() {
					defer GinkgoRecover()
					seen, took := ramp(node, secondRS, []string{firstRS}, 60*time.Second)
					mu.Lock()
					seenOn[node], tookOn[node] = seen, took
					mu.Unlock()
				})
			}
			mid, _ := drv.NodeExec(ctx, nodeA, "sh", "-c", "sleep 8; ipvsadm -Ln -t "+hostPort(vip, 80))
			wg.Wait()
			AddReportEntry("slow start: `ipvsadm -Ln` on "+nodeA+" 8 s into a 20 s window", mid)
			for _, node := range nodes {
				seen := seenOn[node]
				AddReportEntry(fmt.Sprintf("slow start: weights seen on %s over a 20 s window", node), fmt.Sprintf("%v in %v", seen, tookOn[node]))
				rising(seen, node)
				Expect(seen[0]).To(BeNumerically("<=", 20), "starts low on %s: %v", node, seen)
				Expect(len(seen)).To(BeNumerically(">=", 5), "rises in steps on %s: %v", node, seen)
				Expect(tookOn[node]).To(BeNumerically(">=", 12*time.Second), "not full before most of the window on %s", node)
			}
			Expect(mid).To(MatchRegexp(`(?m)^\s+->\s+`+strings.ReplaceAll(secondRS, ".", `\.`)+`\s+Masq\s+[1-9]0\s`), "a ramp weight mid-window:\n%s", mid)

			By("a third pod under a 120 s window; the window edited in place to 30 s: the ramp under way speeds up")
			editWindow(120)
			pods = scale(3)
			third := pods[slices.IndexFunc(pods, func(p corev1.Pod) bool { return p.Name != first.Name && p.Name != second.Name })]
			thirdRS := hostPort(third.Status.PodIP, httpPort.port)
			for _, node := range nodes {
				Eventually(ctx, func(g Gomega) int { return weights(g, node)[thirdRS] }).WithTimeout(20*time.Second).
					Should(Equal(10), "a tenth on %s", node)
			}
			Consistently(ctx, func(g Gomega) int { return weights(g, nodeA)[thirdRS] }).WithTimeout(4*time.Second).
				WithPolling(500*time.Millisecond).Should(Equal(10), "a 120 s window: 20 only after 24 s")
			editWindow(30)
			Eventually(ctx, func(g Gomega) int { return weights(g, nodeA)[thirdRS] }).WithTimeout(20*time.Second).
				Should(BeNumerically(">=", 20), "the ramp follows the shorter window")

			By("restarting node B's agent mid-ramp: the weight continues from what the kernel shows, the others stay full")
			var (
				flaps []string
				last  int
			)
			stop := watchVirtualServer(ctx, drv, nodeB, vip, 80, ipvs.TCP, func(vs *ipvs.VirtualServer) {
				for _, d := range vs.Destinations {
					rs := d.DestinationKey.String()
					if (rs != thirdRS && d.Weight != 100) || (rs == thirdRS && d.Weight < last) {
						flaps = append(flaps, fmt.Sprintf("%s: %s w=%d", time.Now().Format(time.StampMilli), rs, d.Weight))
					}
					if rs == thirdRS {
						last = d.Weight
					}
				}
			})
			restartAgent(ctx, drv, nodeB)
			seen, took := ramp(nodeB, thirdRS, []string{firstRS, secondRS}, 60*time.Second)
			stop()
			AddReportEntry("slow start: weights seen on "+nodeB+" after its agent's restart", fmt.Sprintf("%v in %v", seen, took))
			rising(seen, nodeB+" after the restart")
			Expect(flaps).To(BeEmpty(), "weights on %s during and after the agent's restart", nodeB)

			By("the policy deleted: every weight goes to 1, the full weight without slow start, at once")
			scale(4)
			Expect(drv.Client().Delete(ctx, policy)).To(Succeed())
			for _, node := range nodes {
				Eventually(ctx, func(g Gomega) []int {
					w := weights(g, node)
					g.Expect(w).To(HaveLen(4))
					out := []int{}
					for _, v := range w {
						out = append(out, v)
					}
					return out
				}).WithTimeout(30*time.Second).Should(HaveEach(1), "on %s", node)
			}
		})
	})
}
