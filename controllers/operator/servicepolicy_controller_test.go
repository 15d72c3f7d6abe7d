package operator

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ipvs-operator/ipvs-operator/api/v1alpha1"
)

var _ = Describe("ServicePolicy status", func() {
	var ns string

	BeforeEach(func() {
		n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "policy-"}}
		Expect(k8sClient.Create(ctx, n)).To(Succeed())
		ns = n.Name
	})

	createService := func(name string, labels map[string]string) *corev1.Service {
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
			Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}},
		}
		Expect(k8sClient.Create(ctx, svc)).To(Succeed())
		return svc
	}
	createPolicy := func(name string, selector *metav1.LabelSelector) *v1alpha1.ServicePolicy {
		p := &v1alpha1.ServicePolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec:       v1alpha1.ServicePolicySpec{Selector: selector},
		}
		Expect(k8sClient.Create(ctx, p)).To(Succeed())
		return p
	}
	getPolicy := func(g Gomega, name string) *v1alpha1.ServicePolicy {
		p := &v1alpha1.ServicePolicy{}
		g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, p)).To(Succeed())
		return p
	}
	// expectCondition checks one condition, including that it was computed from the current generation.
	expectCondition := func(g Gomega, p *v1alpha1.ServicePolicy, t string, status metav1.ConditionStatus, reason string) *metav1.Condition {
		c := meta.FindStatusCondition(p.Status.Conditions, t)
		g.Expect(c).NotTo(BeNil(), "no %s condition in %+v", t, p.Status.Conditions)
		g.Expect(c.Status).To(Equal(status), "%s: %s", t, c.Message)
		g.Expect(c.Reason).To(Equal(reason), "%s: %s", t, c.Message)
		g.Expect(c.ObservedGeneration).To(Equal(p.Generation), "%s condition is from an older generation", t)
		return c
	}
	// eventsFor returns the events.k8s.io events recorded on a policy.
	eventsFor := func(g Gomega, name string) []eventsv1.Event {
		var list eventsv1.EventList
		g.Expect(k8sClient.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
		var out []eventsv1.Event
		for _, e := range list.Items {
			if e.Regarding.Kind == "ServicePolicy" && e.Regarding.Name == name {
				out = append(out, e)
			}
		}
		return out
	}
	frontSelector := &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "front"}}

	It("lists the Services a policy applies to, sets Ready with observedGeneration, and settles", func() {
		createService("web", map[string]string{"app": "web", "tier": "front"})
		createService("api", map[string]string{"app": "api", "tier": "front"})
		createService("db", map[string]string{"app": "db", "tier": "back"})
		createPolicy("front", frontSelector)

		var settled *v1alpha1.ServicePolicy
		Eventually(func(g Gomega) {
			p := getPolicy(g, "front")
			g.Expect(p.Status.Services).To(Equal([]string{"api", "web"}))
			g.Expect(p.Status.ServiceCount).To(BeEquivalentTo(2))
			g.Expect(p.Status.ObservedGeneration).To(Equal(p.Generation))
			c := expectCondition(g, p, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonApplied)
			g.Expect(c.Message).To(Equal("Applies to 2 Services"))
			expectCondition(g, p, v1alpha1.ConditionConflicted, metav1.ConditionFalse, v1alpha1.ReasonNoConflict)
			settled = p
		}).Should(Succeed())

		By("writing the status no more once it is right (no hot loop)")
		Consistently(func(g Gomega) string {
			return getPolicy(g, "front").ResourceVersion
		}, 2*time.Second, 200*time.Millisecond).Should(Equal(settled.ResourceVersion))

		By("recording that it started to apply")
		Eventually(func(g Gomega) {
			g.Expect(eventsFor(g, "front")).To(ContainElement(And(
				HaveField("Reason", EventReasonServicesApplied),
				HaveField("Type", corev1.EventTypeNormal),
				HaveField("Note", "Now applies to 2 Services: api, web"),
				HaveField("ReportingController", "ipvs-operator"),
			)))
		}).Should(Succeed())
	})

	It("follows selector changes and Service relabelling", func() {
		createService("web", map[string]string{"tier": "front"})
		db := createService("db", map[string]string{"tier": "back"})
		createPolicy("p", frontSelector)
		Eventually(func(g Gomega) {
			g.Expect(getPolicy(g, "p").Status.Services).To(Equal([]string{"web"}))
		}).Should(Succeed())

		By("changing the selector")
		p := getPolicy(Default, "p")
		p.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "back"}}
		Expect(k8sClient.Update(ctx, p)).To(Succeed())
		Eventually(func(g Gomega) {
			p := getPolicy(g, "p")
			g.Expect(p.Generation).To(BeEquivalentTo(2))
			g.Expect(p.Status.Services).To(Equal([]string{"db"}))
			g.Expect(p.Status.ObservedGeneration).To(BeEquivalentTo(2))
			expectCondition(g, p, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonApplied)
		}).Should(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(eventsFor(g, "p")).To(ContainElement(And(
				HaveField("Reason", EventReasonServicesReleased),
				HaveField("Note", "No longer applies to 1 Service: web"),
			)))
		}).Should(Succeed())

		By("relabelling the only selected Service away")
		patch := client.MergeFrom(db.DeepCopy())
		db.Labels = map[string]string{"tier": "archived"}
		Expect(k8sClient.Patch(ctx, db, patch)).To(Succeed())
		Eventually(func(g Gomega) {
			p := getPolicy(g, "p")
			g.Expect(p.Status.Services).To(BeEmpty())
			g.Expect(p.Status.ServiceCount).To(BeZero())
			expectCondition(g, p, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonNoServices)
		}).Should(Succeed())

		By("creating a Service the selector matches")
		createService("db2", map[string]string{"tier": "back"})
		Eventually(func(g Gomega) {
			g.Expect(getPolicy(g, "p").Status.Services).To(Equal([]string{"db2"}))
		}).Should(Succeed())
	})

	It("reports a conflict on the newer policy, naming the Services and the older policy", func() {
		createService("web", map[string]string{"app": "web"})
		createService("api", map[string]string{"app": "api"})
		createService("db", map[string]string{"app": "db"})
		// Named so that the name order disagrees with the age order: age must decide.
		older := createPolicy("z-older", &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: "app", Operator: metav1.LabelSelectorOpIn, Values: []string{"web", "api"}},
		}})
		Eventually(func(g Gomega) {
			g.Expect(getPolicy(g, "z-older").Status.Services).To(Equal([]string{"api", "web"}))
		}).Should(Succeed())
		time.Sleep(1100 * time.Millisecond) // creationTimestamp has a one-second resolution
		newer := createPolicy("a-newer", &metav1.LabelSelector{})
		Expect(older.CreationTimestamp.Before(&newer.CreationTimestamp)).To(BeTrue(), "the policies were created in the same second")

		Eventually(func(g Gomega) {
			p := getPolicy(g, "a-newer")
			g.Expect(p.Status.Services).To(Equal([]string{"db"}))
			expectCondition(g, p, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonApplied)
			c := expectCondition(g, p, v1alpha1.ConditionConflicted, metav1.ConditionTrue, v1alpha1.ReasonConflict)
			g.Expect(c.Message).To(Equal(`services api, web are governed by older policy "z-older"`))
		}).Should(Succeed())
		Consistently(func(g Gomega) {
			p := getPolicy(g, "z-older")
			g.Expect(p.Status.Services).To(Equal([]string{"api", "web"}))
			expectCondition(g, p, v1alpha1.ConditionConflicted, metav1.ConditionFalse, v1alpha1.ReasonNoConflict)
		}, time.Second, 100*time.Millisecond).Should(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(eventsFor(g, "a-newer")).To(ContainElement(And(
				HaveField("Reason", v1alpha1.ReasonConflict),
				HaveField("Type", corev1.EventTypeWarning),
				HaveField("Note", `services api, web are governed by older policy "z-older"`),
			)))
		}).Should(Succeed())

		By("deleting the older policy, which hands its Services to the newer one")
		Expect(k8sClient.Delete(ctx, older)).To(Succeed())
		Eventually(func(g Gomega) {
			p := getPolicy(g, "a-newer")
			g.Expect(p.Status.Services).To(Equal([]string{"api", "db", "web"}))
			expectCondition(g, p, v1alpha1.ConditionConflicted, metav1.ConditionFalse, v1alpha1.ReasonNoConflict)
		}).Should(Succeed())
	})

	It("reports a selector the API server accepted but that selects nothing", func() {
		createService("web", map[string]string{"app": "web"})
		// matchLabels values are not validated by the CRD schema; as a label selector this one is invalid.
		createPolicy("bad", &metav1.LabelSelector{MatchLabels: map[string]string{"app": "not a label value!"}})
		Eventually(func(g Gomega) {
			p := getPolicy(g, "bad")
			g.Expect(p.Status.Services).To(BeEmpty())
			c := expectCondition(g, p, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonInvalidSelector)
			g.Expect(c.Message).To(ContainSubstring("not a label value!"))
		}).Should(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(eventsFor(g, "bad")).To(ContainElement(And(
				HaveField("Reason", v1alpha1.ReasonInvalidSelector),
				HaveField("Type", corev1.EventTypeWarning),
			)))
		}).Should(Succeed())
	})

	It("sums the nodes' health check reports into Degraded, and drops it with the health check", func() {
		createService("web", map[string]string{"app": "web"})
		p := createPolicy("hc", &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}})
		Eventually(func(g Gomega) {
			g.Expect(meta.FindStatusCondition(getPolicy(g, "hc").Status.Conditions, v1alpha1.ConditionDegraded)).To(BeNil(),
				"no health check, no Degraded condition")
		}).Should(Succeed())

		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(p), p)).To(Succeed())
		before := p.DeepCopy()
		p.Spec.HealthCheck = &v1alpha1.HealthCheckSpec{}
		Expect(k8sClient.Patch(ctx, p, client.MergeFrom(before))).To(Succeed()) // the operator writes status meanwhile
		Eventually(func(g Gomega) {
			expectCondition(g, getPolicy(g, "hc"), v1alpha1.ConditionDegraded, metav1.ConditionFalse, v1alpha1.ReasonHealthy)
		}).Should(Succeed())

		report := func(node string, out int32, panicking ...string) *v1alpha1.HealthCheckStatus {
			r := &v1alpha1.HealthCheckStatus{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "hc." + node, Labels: map[string]string{
					v1alpha1.HealthCheckStatusPolicyLabel: "hc", v1alpha1.HealthCheckStatusNodeLabel: node}},
				Report: v1alpha1.HealthCheckReport{Node: node, Policy: "hc", TakenOutCount: out, PanicServices: panicking},
			}
			for range out {
				r.Report.TakenOut = append(r.Report.TakenOut, v1alpha1.TakenOutEndpoint{Service: "web", Endpoint: "10.244.1.5:8080", Target: "tcp://10.244.1.5:8080"})
			}
			Expect(k8sClient.Create(ctx, r)).To(Succeed())
			return r
		}
		a := report("node-a", 1)
		b := report("node-b", 2)
		Eventually(func(g Gomega) {
			c := expectCondition(g, getPolicy(g, "hc"), v1alpha1.ConditionDegraded, metav1.ConditionTrue, v1alpha1.ReasonTakenOut)
			g.Expect(c.Message).To(ContainSubstring("3 real servers are out of rotation on 2 nodes"))
			g.Expect(c.Message).To(ContainSubstring("kubectl get hcstatus -n " + ns))
		}).Should(Succeed())

		Expect(k8sClient.Delete(ctx, b)).To(Succeed())
		report("node-b", 0, "web")
		Eventually(func(g Gomega) {
			c := expectCondition(g, getPolicy(g, "hc"), v1alpha1.ConditionDegraded, metav1.ConditionTrue, v1alpha1.ReasonHealthPanic)
			g.Expect(c.Message).To(ContainSubstring("Every endpoint of web fails its health check on 1 node"))
		}).Should(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(eventsFor(g, "hc")).To(ContainElement(HaveField("Reason", v1alpha1.ReasonHealthPanic)))
		}).Should(Succeed())

		Expect(k8sClient.Delete(ctx, a)).To(Succeed())
		Expect(k8sClient.Delete(ctx, &v1alpha1.HealthCheckStatus{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "hc.node-b"}})).To(Succeed())
		Eventually(func(g Gomega) {
			expectCondition(g, getPolicy(g, "hc"), v1alpha1.ConditionDegraded, metav1.ConditionFalse, v1alpha1.ReasonHealthy)
		}).Should(Succeed())

		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(p), p)).To(Succeed())
		before = p.DeepCopy()
		p.Spec.HealthCheck = nil
		Expect(k8sClient.Patch(ctx, p, client.MergeFrom(before))).To(Succeed()) // the operator writes status meanwhile
		Eventually(func(g Gomega) {
			g.Expect(meta.FindStatusCondition(getPolicy(g, "hc").Status.Conditions, v1alpha1.ConditionDegraded)).To(BeNil())
		}).Should(Succeed())
	})
})
