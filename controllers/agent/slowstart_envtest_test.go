package agent_test

import (
	"fmt"
	"regexp"
	"strconv"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1alpha1 "github.com/ipvs-operator/ipvs-operator/api/v1alpha1"
	"github.com/ipvs-operator/ipvs-operator/ipvs/syncer"
)

// weightOf reads a real server's weight from a table in `ipvsadm -Sn` notation; -1 when it is absent.
func weightOf(table, vs, rs string) int {
	m := regexp.MustCompile(`-a -t ` + regexp.QuoteMeta(vs) + ` -r ` + regexp.QuoteMeta(rs) + ` -m -w (\d+)`).FindStringSubmatch(table)
	if m == nil {
		return -1
	}
	w, _ := strconv.Atoi(m[1])
	return w
}

var _ = Describe("slow start", func() {
	It("ramps a new endpoint's weight over the window, follows edits, survives a restart without flapping, and goes full without a policy", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		svc := service(ns, "ss", true, corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromString("http")})
		Expect(k8s.Create(ctx, svc)).To(Succeed())
		es := slice(ns, "ss", 8080, map[string]bool{"10.244.1.91": true, "10.244.1.92": true})
		Expect(k8s.Create(ctx, es)).To(Succeed())
		pol := &lbv1alpha1.ServicePolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "ss"},
			Spec: lbv1alpha1.ServicePolicySpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "ss"}},
				Scheduler: lbv1alpha1.SchedulerWeightedRoundRobin, SlowStart: &lbv1alpha1.SlowStartSpec{WindowSeconds: 5}}}
		Expect(k8s.Create(ctx, pol)).To(Succeed())
		vs := svc.Spec.ClusterIP + ":80"

		node := newIsolatedKernel()
		start := func() runningAgent {
			eng := node.engine()
			return startAgent(ctx, agentConfig{rest: cfg, scheme: k8s.Scheme(), engine: eng, adopted: eng.(*syncer.Syncer).Programmed})
		}
		agentA := start()
		w := func(rs string) func() int { return func() int { return weightOf(node.table(), vs, rs) } }

		By("endpoints there when the Service gets its policy are at full weight at once: nothing to ramp against")
		Eventually(ctx, w("10.244.1.91:8080")).WithTimeout(20 * time.Second).Should(Equal(100))
		Expect(w("10.244.1.92:8080")()).To(Equal(100))

		// sample polls a real server's weight until it is full or the timeout passes, and returns the
		// distinct weights seen, in order.
		sample := func(rs string, timeout time.Duration) []int {
			var seen []int
			deadline := time.Now().Add(timeout)
			for time.Now().Before(deadline) {
				if cur := w(rs)(); cur >= 0 && (len(seen) == 0 || seen[len(seen)-1] != cur) {
					seen = append(seen, cur)
					if cur == 100 {
						break
					}
				}
				time.Sleep(50 * time.Millisecond)
			}
			return seen
		}

		By("a new endpoint starts at a tenth and rises step by step to full within the window (5 s)")
		Expect(k8s.Get(ctx, client.ObjectKeyFromObject(es), es)).To(Succeed())
		es.Endpoints = append(es.Endpoints, slice(ns, "ss", 8080, map[string]bool{"10.244.1.93": true}).Endpoints...)
		Expect(k8s.Update(ctx, es)).To(Succeed())
		began := time.Now()
		seen := sample("10.244.1.93:8080", 10*time.Second)
		took := time.Since(began)
		GinkgoWriter.Printf("weights seen over the 5 s window: %v in %v\n", seen, took)
		Expect(seen).To(HaveLen(10), "10, 20 ... 90, 100: one update per step")
		Expect(seen[0]).To(Equal(10))
		Expect(seen).To(HaveExactElements(10, 20, 30, 40, 50, 60, 70, 80, 90, 100))
		Expect(took).To(BeNumerically("~", 5*time.Second, 1500*time.Millisecond))
		Expect(w("10.244.1.91:8080")()).To(Equal(100), "the others never moved")

		By("not Ready, then Ready again: it ramps again; editing the window in place stretches the ramp under way")
		setReady := func(ip string, ready bool) {
			Expect(k8s.Get(ctx, client.ObjectKeyFromObject(es), es)).To(Succeed())
			for i := range es.Endpoints {
				if es.Endpoints[i].Addresses[0] == ip {
					es.Endpoints[i].Conditions.Ready, es.Endpoints[i].Conditions.Serving = &ready, &ready
				}
			}
			Expect(k8s.Update(ctx, es)).To(Succeed())
		}
		setReady("10.244.1.93", false)
		Eventually(ctx, w("10.244.1.93:8080")).WithTimeout(10*time.Second).Should(BeNumerically("<=", 0), "out: deleted (no connections) or draining at weight 0")
		Expect(k8s.Get(ctx, client.ObjectKeyFromObject(pol), pol)).To(Succeed())
		pol.Spec.SlowStart.WindowSeconds = 60
		Expect(k8s.Update(ctx, pol)).To(Succeed())
		setReady("10.244.1.93", true)
		Eventually(ctx, w("10.244.1.93:8080")).WithTimeout(10 * time.Second).Should(Equal(10))
		Consistently(ctx, w("10.244.1.93:8080")).WithTimeout(3*time.Second).Should(Equal(10), "a 60 s window: 20 only after 12 s")
		Expect(k8s.Get(ctx, client.ObjectKeyFromObject(pol), pol)).To(Succeed())
		pol.Spec.SlowStart.WindowSeconds = 20 // 4 s in: the ramp continues at 20% of a 20 s window
		Expect(k8s.Update(ctx, pol)).To(Succeed())
		Eventually(ctx, w("10.244.1.93:8080")).WithTimeout(10 * time.Second).Should(BeNumerically(">=", 20))

		By("an agent restart mid-ramp: the new agent continues from the kernel's weight; the full ones stay full")
		Eventually(ctx, w("10.244.1.93:8080")).WithTimeout(10 * time.Second).Should(BeNumerically(">=", 30))
		agentA.stop()
		before := w("10.244.1.93:8080")()
		agentB := start()
		defer agentB.stop()
		Eventually(func() error { return agentB.startup.ReadyCheck(nil) }).WithTimeout(20 * time.Second).Should(Succeed())
		seen = sample("10.244.1.93:8080", 25*time.Second)
		GinkgoWriter.Printf("weights after the restart (was %d): %v\n", before, seen)
		Expect(seen[0]).To(BeNumerically(">=", before), "never back to the start")
		for i := 1; i < len(seen); i++ {
			Expect(seen[i]).To(BeNumerically(">", seen[i-1]), "the weight only rises: %v", seen)
		}
		Expect(seen[len(seen)-1]).To(Equal(100))
		Expect(w("10.244.1.91:8080")()).To(Equal(100), "no flapping of the endpoints at full weight")
		Expect(w("10.244.1.92:8080")()).To(Equal(100))

		By("the policy deleted: every weight goes to the full weight of a Service without slow start, 1")
		Expect(k8s.Delete(ctx, pol)).To(Succeed())
		Eventually(ctx, node.table).WithTimeout(10 * time.Second).Should(And(
			ContainSubstring(fmt.Sprintf("-a -t %s -r 10.244.1.91:8080 -m -w 1", vs)),
			ContainSubstring(fmt.Sprintf("-a -t %s -r 10.244.1.93:8080 -m -w 1", vs))))
	})
})
