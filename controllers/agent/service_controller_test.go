package agent_test

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/types"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1alpha1 "github.com/ipvs-operator/ipvs-operator/api/v1alpha1"
	"github.com/ipvs-operator/ipvs-operator/ipvs/fake"
)

func newNamespace(ctx SpecContext) string {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "agent-"}}
	Expect(k8s.Create(ctx, ns)).To(Succeed())
	return ns.Name
}

func service(ns, name string, labelled bool, ports ...corev1.ServicePort) *corev1.Service {
	labels := map[string]string{"app": name}
	if labelled {
		labels[lbv1alpha1.ServiceProxyNameLabel] = lbv1alpha1.ServiceProxyName
	}
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": name}, Ports: ports},
	}
}

// slice is what the EndpointSlice controller would write: one port named "http", endpoints with readiness.
func slice(ns, svc string, port int32, ready map[string]bool) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: svc + "-abc", Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To(port), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	for ip, r := range ready {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{ip},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(r), Serving: ptr.To(r), Terminating: ptr.To(false)},
			NodeName:   ptr.To(nodeName),
		})
	}
	return s
}

func eventuallyTable(ctx SpecContext, matcher types.GomegaMatcher) {
	GinkgoHelper()
	Eventually(ctx, table).WithTimeout(10 * time.Second).WithPolling(50 * time.Millisecond).Should(matcher)
}

var _ = Describe("the agent's controllers", func() {
	It("sweeps what a previous agent left, leaves a foreign virtual server alone, and becomes ready", func(ctx SpecContext) {
		Eventually(ctx, func() error { return startup.ReadyCheck(nil) }).WithTimeout(20 * time.Second).Should(Succeed())
		// The guard must know the pods before the table is re-ensured, or it refuses them meanwhile.
		// (The Node watch may also hand the same CIDRs over before Adopt; what matters is that Adopt never
		// comes first.)
		calls := engine.Calls()
		Expect(calls[0]).To(Equal("SetPodCIDRs[10.244.9.0/24]"))
		Expect(calls).To(ContainElement("Adopt"))
		eventuallyTable(ctx, And(
			Not(ContainSubstring("10.96.200.200")),
			ContainSubstring("-A -t 198.51.100.7:80 -s wlc"),
		))
	})

	It("programs a labelled Service from its EndpointSlices and follows readiness", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		svc := service(ns, "web", true, corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromString("http")})
		Expect(k8s.Create(ctx, svc)).To(Succeed())
		es := slice(ns, "web", 8080, map[string]bool{"10.244.1.2": true, "10.244.1.3": true})
		Expect(k8s.Create(ctx, es)).To(Succeed())
		vip := svc.Spec.ClusterIP

		eventuallyTable(ctx, ContainSubstring(strings.Join([]string{
			fmt.Sprintf("-A -t %s:80 -s rr", vip),
			fmt.Sprintf("-a -t %s:80 -r 10.244.1.2:8080 -m -w 1", vip),
			fmt.Sprintf("-a -t %s:80 -r 10.244.1.3:8080 -m -w 1", vip),
		}, "\n")))
		Eventually(vips.List).Should(ContainElement(netip.MustParseAddr(vip)))

		// An endpoint that stops being ready drains (weight 0), since it has no connections it goes at once.
		es.Endpoints[0].Conditions.Ready = ptr.To(false)
		es.Endpoints[0].Conditions.Serving = ptr.To(false)
		Expect(k8s.Update(ctx, es)).To(Succeed())
		bad := es.Endpoints[0].Addresses[0]
		eventuallyTable(ctx, Not(ContainSubstring(bad+":8080")))

		By("deleting the Service, its virtual server and VIP go")
		Expect(k8s.Delete(ctx, svc)).To(Succeed())
		eventuallyTable(ctx, Not(ContainSubstring(vip)))
		Eventually(vips.List).ShouldNot(ContainElement(netip.MustParseAddr(vip)))
	})

	It("leaves Services without the proxy-name label to kube-proxy", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		svc := service(ns, "theirs", false, corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)})
		Expect(k8s.Create(ctx, svc)).To(Succeed())
		Expect(k8s.Create(ctx, slice(ns, "theirs", 8080, map[string]bool{"10.244.1.9": true}))).To(Succeed())
		Consistently(ctx, table).WithTimeout(2 * time.Second).ShouldNot(ContainSubstring(svc.Spec.ClusterIP))

		By("labelling it hands it to the agent")
		svc.Labels[lbv1alpha1.ServiceProxyNameLabel] = lbv1alpha1.ServiceProxyName
		Expect(k8s.Update(ctx, svc)).To(Succeed())
		eventuallyTable(ctx, ContainSubstring(svc.Spec.ClusterIP+":80 -r 10.244.1.9:8080"))
	})

	It("applies the governing ServicePolicy, the older one on conflict, and changes the scheduler in place", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		svc := service(ns, "api", true, corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)})
		Expect(k8s.Create(ctx, svc)).To(Succeed())
		Expect(k8s.Create(ctx, slice(ns, "api", 8080, map[string]bool{"10.244.1.20": true}))).To(Succeed())
		vip := svc.Spec.ClusterIP
		eventuallyTable(ctx, ContainSubstring(fmt.Sprintf("-A -t %s:80 -s rr", vip)))

		older := &lbv1alpha1.ServicePolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "older"},
			Spec: lbv1alpha1.ServicePolicySpec{
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "api"}}, Scheduler: lbv1alpha1.SchedulerLeastConnection,
			},
		}
		Expect(k8s.Create(ctx, older)).To(Succeed())
		eventuallyTable(ctx, ContainSubstring(fmt.Sprintf("-A -t %s:80 -s lc", vip)))
		kernel.ResetOps()

		time.Sleep(1100 * time.Millisecond) // creation timestamps have second precision
		newer := older.DeepCopy()
		newer.ObjectMeta = metav1.ObjectMeta{Namespace: ns, Name: "newer"}
		newer.Spec.Scheduler = lbv1alpha1.SchedulerSourceHashing
		Expect(k8s.Create(ctx, newer)).To(Succeed())
		Consistently(ctx, table).WithTimeout(2*time.Second).Should(ContainSubstring(fmt.Sprintf("-A -t %s:80 -s lc", vip)),
			"the older policy keeps governing the Service")

		By("changing the governing policy's scheduler updates the virtual server in place")
		Expect(k8s.Get(ctx, client.ObjectKeyFromObject(older), older)).To(Succeed())
		older.Spec.Scheduler = lbv1alpha1.SchedulerWeightedRoundRobin
		Expect(k8s.Update(ctx, older)).To(Succeed())
		eventuallyTable(ctx, ContainSubstring(fmt.Sprintf("-A -t %s:80 -s wrr", vip)))
		Expect(kernel.OpCount(fake.DeleteService)).To(BeZero(), "a scheduler change must not recreate the virtual server")
		Expect(kernel.OpCount(fake.UpdateService)).To(BeNumerically(">=", 1))

		By("deleting the older policy hands the Service to the newer one")
		Expect(k8s.Delete(ctx, older)).To(Succeed())
		eventuallyTable(ctx, ContainSubstring(fmt.Sprintf("-A -t %s:80 -s sh", vip)))
	})

	It("uses serving-and-terminating endpoints when none is ready", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		svc := service(ns, "term", true, corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)})
		Expect(k8s.Create(ctx, svc)).To(Succeed())
		es := slice(ns, "term", 8080, map[string]bool{"10.244.1.30": false})
		es.Endpoints[0].Conditions = discoveryv1.EndpointConditions{Ready: ptr.To(false), Serving: ptr.To(true), Terminating: ptr.To(true)}
		Expect(k8s.Create(ctx, es)).To(Succeed())
		eventuallyTable(ctx, ContainSubstring(svc.Spec.ClusterIP+":80 -r 10.244.1.30:8080 -m -w 1"))
	})

	It("takes the pod CIDRs of the data-path rules from its own Node only (NodeCIDR)", func(ctx SpecContext) {
		Eventually(rules.PodCIDRs).WithTimeout(10 * time.Second).Should(Equal([]netip.Prefix{netip.MustParsePrefix("10.244.9.0/24")}))
		// Another node's pods never reach this node's IPVS with a ClusterIP destination: their range
		// stays out of the guard.
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "cidr-node"}, Spec: corev1.NodeSpec{PodCIDR: "10.244.7.0/24", PodCIDRs: []string{"10.244.7.0/24"}}}
		Expect(k8s.Create(ctx, node)).To(Succeed())
		Consistently(rules.PodCIDRs).WithTimeout(2 * time.Second).Should(Equal([]netip.Prefix{netip.MustParsePrefix("10.244.9.0/24")}))
	})
})
