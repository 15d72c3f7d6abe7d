package agent_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1alpha1 "github.com/ipvs-operator/ipvs-operator/api/v1alpha1"
	"github.com/ipvs-operator/ipvs-operator/controllers/agent"
	"github.com/ipvs-operator/ipvs-operator/controllers/agent/health"
	"github.com/ipvs-operator/ipvs-operator/ipvs/syncer"
)

// EndpointSlices may not hold loopback addresses, so the suite's prober cannot dial real listeners: its
// probe consults probesDown instead (the real probes are proven in the health package against loopback and
// in the lab against pods). Everything else is the agent's: policy to settings, Translate, the prober's
// thresholds and scheduling, the reconciles its verdicts trigger, the plan, the (fake) kernel.
var (
	probesDownMu sync.Mutex
	probesDown   = map[string]bool{} // "addr:port"
	errProbeDown = errors.New("injected: not answering")

	healthChecker = agent.NewHealthChecker(health.Options{Probe: fakeProbe}, nil)
)

func fakeProbe(_ context.Context, t health.Target) error {
	probesDownMu.Lock()
	defer probesDownMu.Unlock()
	if probesDown[t.AddrPort().String()] {
		return errProbeDown
	}
	return nil
}

func setDown(addrs ...string) {
	probesDownMu.Lock()
	defer probesDownMu.Unlock()
	clear(probesDown)
	for _, a := range addrs {
		probesDown[a] = true
	}
}

var _ = Describe("health checks", func() {
	AfterEach(func() { setDown() })

	It("takes an unhealthy endpoint out, puts it back, panics when all fail, and follows policy edits and deletion", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		svc := service(ns, "hc", true, corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromString("http")})
		Expect(k8s.Create(ctx, svc)).To(Succeed())
		Expect(k8s.Create(ctx, slice(ns, "hc", 8080, map[string]bool{"10.244.1.71": true, "10.244.1.72": true}))).To(Succeed())
		vip := svc.Spec.ClusterIP
		report := &lbv1alpha1.HealthCheckStatus{}
		a := fmt.Sprintf("-a -t %s:80 -r 10.244.1.71:8080 -m -w 1", vip)
		b := fmt.Sprintf("-a -t %s:80 -r 10.244.1.72:8080 -m -w 1", vip)
		// Taken out: weight 0, so that their connections continue (the policy drains TCP).
		a0 := fmt.Sprintf("-a -t %s:80 -r 10.244.1.71:8080 -m -w 0", vip)
		b0 := fmt.Sprintf("-a -t %s:80 -r 10.244.1.72:8080 -m -w 0", vip)
		eventuallyTable(ctx, And(ContainSubstring(a), ContainSubstring(b)))

		By("a policy without a health check: a down endpoint stays (readiness alone decides)")
		setDown("10.244.1.71:8080")
		pol := &lbv1alpha1.ServicePolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "hc"},
			Spec: lbv1alpha1.ServicePolicySpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "hc"}}}}
		Expect(k8s.Create(ctx, pol)).To(Succeed())
		Consistently(ctx, table).WithTimeout(2 * time.Second).WithPolling(100 * time.Millisecond).
			Should(And(ContainSubstring(a), ContainSubstring(b)))

		By("adding a TCP health check (period 2 s, thresholds 1): the down endpoint goes to weight 0, the other stays")
		Expect(k8s.Get(ctx, client.ObjectKeyFromObject(pol), pol)).To(Succeed())
		pol.Spec.HealthCheck = &lbv1alpha1.HealthCheckSpec{PeriodSeconds: 2, UnhealthyThreshold: 1, HealthyThreshold: 1}
		Expect(k8s.Update(ctx, pol)).To(Succeed())
		eventuallyTable(ctx, And(ContainSubstring(a0), ContainSubstring(b)))
		Eventually(func() int { n, _ := healthChecker.Counts(); return n }).Should(BeNumerically(">=", 2))
		By("the node's HealthCheckStatus report names it, owned by the Node")
		Eventually(ctx, func(g Gomega) {
			g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "hc." + nodeName}, report)).To(Succeed())
			g.Expect(report.Report.TakenOutCount).To(Equal(int32(1)))
			g.Expect(report.Report.TakenOut).To(Equal([]lbv1alpha1.TakenOutEndpoint{{Service: "hc", Endpoint: "10.244.1.71:8080", Target: "tcp://10.244.1.71:8080"}}))
			g.Expect(report.Report.PanicServices).To(BeEmpty())
			g.Expect(report.Labels).To(HaveKeyWithValue(lbv1alpha1.HealthCheckStatusPolicyLabel, "hc"))
			g.Expect(report.OwnerReferences).To(ConsistOf(HaveField("Kind", "Node")))
		}).WithTimeout(10 * time.Second).Should(Succeed())

		By("it answers again: its weight comes back")
		setDown()
		eventuallyTable(ctx, And(ContainSubstring(a), ContainSubstring(b)))
		Eventually(ctx, func() error {
			return k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "hc." + nodeName}, report)
		}).WithTimeout(10*time.Second).Should(Satisfy(apierrors.IsNotFound), "nothing to report: the report is deleted")

		By("every endpoint fails: panic mode serves both, with a Warning Event on the Service")
		setDown("10.244.1.71:8080", "10.244.1.72:8080")
		Eventually(ctx, func() []string { return warningsFor(ctx, k8s, ns, "hc") }).WithTimeout(10 * time.Second).
			Should(ContainElement(agent.ReasonHealthPanic))
		Expect(table()).To(And(ContainSubstring(a), ContainSubstring(b)))
		Eventually(ctx, func(g Gomega) {
			g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "hc." + nodeName}, report)).To(Succeed())
			g.Expect(report.Report.PanicServices).To(Equal([]string{"hc"}))
			g.Expect(report.Report.TakenOutCount).To(BeZero(), "in panic mode nothing is taken out")
		}).WithTimeout(10 * time.Second).Should(Succeed())

		By("one recovers: the panic ends and only it serves")
		setDown("10.244.1.72:8080")
		eventuallyTable(ctx, And(ContainSubstring(a), ContainSubstring(b0)))

		By("removing the health check from the policy: every ready endpoint is back, nothing is probed for it")
		Expect(k8s.Get(ctx, client.ObjectKeyFromObject(pol), pol)).To(Succeed())
		pol.Spec.HealthCheck = nil
		Expect(k8s.Update(ctx, pol)).To(Succeed())
		eventuallyTable(ctx, And(ContainSubstring(a), ContainSubstring(b)))

		By("a health check again, then the policy deleted: back to readiness alone")
		Expect(k8s.Get(ctx, client.ObjectKeyFromObject(pol), pol)).To(Succeed())
		pol.Spec.HealthCheck = &lbv1alpha1.HealthCheckSpec{PeriodSeconds: 2, UnhealthyThreshold: 1, HealthyThreshold: 1}
		Expect(k8s.Update(ctx, pol)).To(Succeed())
		eventuallyTable(ctx, And(ContainSubstring(a), ContainSubstring(b0)))
		Expect(k8s.Delete(ctx, pol)).To(Succeed())
		eventuallyTable(ctx, And(ContainSubstring(a), ContainSubstring(b)))

		By("the Service deleted: its targets are no longer probed")
		Expect(k8s.Delete(ctx, svc)).To(Succeed())
		Eventually(func() int { n, _ := healthChecker.Counts(); return n }).WithTimeout(10 * time.Second).Should(BeZero())
	})

	It("keeps an endpoint it had taken out at weight 0 through an agent restart (no flapping)", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		svc := service(ns, "hcr", true, corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromString("http")})
		Expect(k8s.Create(ctx, svc)).To(Succeed())
		Expect(k8s.Create(ctx, slice(ns, "hcr", 8080, map[string]bool{"10.244.1.81": true, "10.244.1.82": true}))).To(Succeed())
		// Three failures in a row to go out: a restarted agent that started it healthy would put it back
		// for at least two periods (4 s) before taking it out again.
		Expect(k8s.Create(ctx, &lbv1alpha1.ServicePolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "hcr"},
			Spec: lbv1alpha1.ServicePolicySpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "hcr"}},
				HealthCheck: &lbv1alpha1.HealthCheckSpec{PeriodSeconds: 2, UnhealthyThreshold: 3, HealthyThreshold: 1}}})).To(Succeed())
		setDown("10.244.1.81:8080")
		out := fmt.Sprintf("-a -t %s:80 -r 10.244.1.81:8080 -m -w 0", svc.Spec.ClusterIP)

		node := newIsolatedKernel()
		start := func() runningAgent {
			eng := node.engine()
			hc := agent.NewHealthChecker(health.Options{Probe: fakeProbe}, eng.(*syncer.Syncer).Programmed)
			return startAgent(ctx, agentConfig{rest: cfg, scheme: k8s.Scheme(), engine: eng, health: hc, noReports: true})
		}
		first := start()
		Eventually(ctx, node.table).WithTimeout(20 * time.Second).Should(ContainSubstring(out))
		first.stop()

		By("a new agent adopts the kernel: the endpoint stays at weight 0 from its first sync on")
		second := start()
		defer second.stop()
		Eventually(func() error { return second.startup.ReadyCheck(nil) }).WithTimeout(20 * time.Second).Should(Succeed())
		Consistently(ctx, node.table).WithTimeout(7 * time.Second).WithPolling(100 * time.Millisecond).Should(ContainSubstring(out))

		By("it answers again: back after healthyThreshold probes")
		setDown()
		Eventually(ctx, node.table).WithTimeout(20 * time.Second).Should(ContainSubstring(
			fmt.Sprintf("-a -t %s:80 -r 10.244.1.81:8080 -m -w 1", svc.Spec.ClusterIP)))
	})
})
