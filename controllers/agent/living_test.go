package agent_test

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	lbv1alpha1 "github.com/ipvs-operator/ipvs-operator/api/v1alpha1"
	"github.com/ipvs-operator/ipvs-operator/controllers/agent"
	"github.com/ipvs-operator/ipvs-operator/ipvs"
	"github.com/ipvs-operator/ipvs-operator/ipvs/fake"
	"github.com/ipvs-operator/ipvs-operator/ipvs/syncer"
)

// These specs are the agent in a living cluster: Services edited in place, API errors during a restart, a
// CRD that is missing, a policy that turns invalid. Each failed on the agent before it handled them.

// warningsFor returns the reasons of the Warning events recorded on a Service.
func warningsFor(ctx context.Context, c client.Client, ns, name string) []string {
	var list eventsv1.EventList
	Expect(c.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
	var out []string
	for _, e := range list.Items {
		if e.Regarding.Kind == "Service" && e.Regarding.Name == name && e.Type == corev1.EventTypeWarning {
			out = append(out, e.Reason)
		}
	}
	return out
}

// twoNodeSlice is an EndpointSlice with one ready endpoint on this node and one on another.
func twoNodeSlice(ns, svc string, port int32, here, there string) *discoveryv1.EndpointSlice {
	es := slice(ns, svc, port, map[string]bool{here: true, there: true})
	for i := range es.Endpoints {
		if es.Endpoints[i].Addresses[0] == there {
			es.Endpoints[i].NodeName = ptr.To("node-b")
		}
	}
	return es
}

// isolatedAgent is an agent with a kernel of its own, so it can be stopped and restarted without touching the
// suite's agent.
type isolatedAgent struct {
	kernel *fake.IPVS
	vips   *fake.VIPs
	rules  *fake.Rules
}

func newIsolatedKernel() isolatedAgent {
	k := isolatedAgent{kernel: fake.New(), vips: fake.NewVIPs(), rules: fake.NewRules()}
	Expect(k.vips.EnsureInterface()).To(Succeed())
	return k
}

func (k isolatedAgent) engine() agent.Engine {
	return syncer.New(k.kernel, k.vips, k.rules, clock.RealClock{}, syncer.Options{})
}

func (k isolatedAgent) table() string {
	vs, err := ipvs.Snapshot(k.kernel)
	Expect(err).NotTo(HaveOccurred())
	return ipvs.Render(vs)
}

// policyListsFail makes every List of ServicePolicies fail while fail is set, as an API server or cache
// hiccup would; the rest of the client works.
type policyListsFail struct {
	client.Client
	fail *atomic.Bool
}

func (c policyListsFail) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	if _, ok := list.(*lbv1alpha1.ServicePolicyList); ok && c.fail.Load() {
		return apierrors.NewServiceUnavailable("injected: ServicePolicies cannot be listed")
	}
	return c.Client.List(ctx, list, opts...)
}

var _ = Describe("the agent in a living cluster", func() {
	It("follows every edit of a live Service: port, sessionAffinity and its timeout, internalTrafficPolicy, dual-stack, type", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		svc := service(ns, "live", true, corev1.ServicePort{Name: "http", Port: 3000, TargetPort: intstr.FromString("http")})
		Expect(k8s.Create(ctx, svc)).To(Succeed())
		Expect(k8s.Create(ctx, twoNodeSlice(ns, "live", 8080, "10.244.1.40", "10.244.2.40"))).To(Succeed())
		vip := svc.Spec.ClusterIP
		eventuallyTable(ctx, ContainSubstring(strings.Join([]string{
			fmt.Sprintf("-A -t %s:3000 -s rr", vip),
			fmt.Sprintf("-a -t %s:3000 -r 10.244.1.40:8080 -m -w 1", vip),
			fmt.Sprintf("-a -t %s:3000 -r 10.244.2.40:8080 -m -w 1", vip),
		}, "\n")))

		edit := func(what string, f func(*corev1.Service)) {
			GinkgoHelper()
			By(what)
			Expect(k8s.Get(ctx, client.ObjectKeyFromObject(svc), svc)).To(Succeed())
			f(svc)
			Expect(k8s.Update(ctx, svc)).To(Succeed())
		}
		edit("changing the port 3000 -> 3001", func(s *corev1.Service) { s.Spec.Ports[0].Port = 3001 })
		eventuallyTable(ctx, And(ContainSubstring(fmt.Sprintf("-A -t %s:3001 -s rr\n", vip)), Not(ContainSubstring(vip+":3000"))))

		edit("setting sessionAffinity ClientIP", func(s *corev1.Service) { s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP })
		eventuallyTable(ctx, ContainSubstring(fmt.Sprintf("-A -t %s:3001 -s rr -p 10800", vip)))

		edit("changing the affinity timeout", func(s *corev1.Service) {
			s.Spec.SessionAffinityConfig.ClientIP.TimeoutSeconds = ptr.To[int32](60)
		})
		eventuallyTable(ctx, ContainSubstring(fmt.Sprintf("-A -t %s:3001 -s rr -p 60", vip)))

		edit("setting internalTrafficPolicy Local", func(s *corev1.Service) {
			s.Spec.InternalTrafficPolicy = ptr.To(corev1.ServiceInternalTrafficPolicyLocal)
		})
		eventuallyTable(ctx, And(ContainSubstring(vip+":3001 -r 10.244.1.40:8080"), Not(ContainSubstring("10.244.2.40"))))

		edit("upgrading it to dual-stack", func(s *corev1.Service) {
			s.Spec.IPFamilyPolicy = ptr.To(corev1.IPFamilyPolicyPreferDualStack)
		})
		Expect(svc.Spec.ClusterIPs).To(HaveLen(2), "the API server allocates an IPv6 ClusterIP")
		vip6 := netip.MustParseAddr(svc.Spec.ClusterIPs[1])
		eventuallyTable(ctx, ContainSubstring(fmt.Sprintf("-A -t [%s]:3001 -s rr -p 60", vip6)))
		Eventually(vips.List).Should(ContainElement(vip6))

		edit("turning it into an ExternalName Service", func(s *corev1.Service) {
			s.Spec = corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "db.example.invalid"}
		})
		eventuallyTable(ctx, And(Not(ContainSubstring(vip+":")), Not(ContainSubstring(vip6.String()))))
		Eventually(vips.List).ShouldNot(ContainElement(netip.MustParseAddr(vip)))

		By("a new Service given the released ClusterIP is programmed, without a conflict")
		reuse := service(ns, "reuse", true, corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromString("http")})
		reuse.Spec.ClusterIP = vip
		Expect(k8s.Create(ctx, reuse)).To(Succeed())
		Expect(k8s.Create(ctx, slice(ns, "reuse", 8080, map[string]bool{"10.244.1.41": true}))).To(Succeed())
		eventuallyTable(ctx, ContainSubstring(fmt.Sprintf("-a -t %s:80 -r 10.244.1.41:8080 -m -w 1", vip)))
	})

	It("keeps a policy's Services balanced as they were when the policy turns invalid, and follows their endpoints", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		svc := service(ns, "sticky", true, corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)})
		Expect(k8s.Create(ctx, svc)).To(Succeed())
		es := slice(ns, "sticky", 8080, map[string]bool{"10.244.1.50": true})
		Expect(k8s.Create(ctx, es)).To(Succeed())
		pol := &lbv1alpha1.ServicePolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "affinity"},
			Spec: lbv1alpha1.ServicePolicySpec{
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "sticky"}}, Scheduler: lbv1alpha1.SchedulerSourceHashing,
			},
		}
		Expect(k8s.Create(ctx, pol)).To(Succeed())
		vip := svc.Spec.ClusterIP
		eventuallyTable(ctx, ContainSubstring(fmt.Sprintf("-A -t %s:80 -s sh", vip)))

		By("editing the selector to one the API server accepts but that cannot be parsed")
		Expect(k8s.Get(ctx, client.ObjectKeyFromObject(pol), pol)).To(Succeed())
		pol.Spec.Selector.MatchLabels["app"] = "not a label value!"
		Expect(k8s.Update(ctx, pol)).To(Succeed())
		Eventually(ctx, func() []string { return warningsFor(ctx, k8s, ns, "sticky") }).Should(ContainElement("PolicyInvalid"))
		Consistently(ctx, table).WithTimeout(2*time.Second).Should(ContainSubstring(fmt.Sprintf("-A -t %s:80 -s sh", vip)),
			"sh -> rr would break affinity silently")

		By("its endpoints are still followed")
		Expect(k8s.Get(ctx, client.ObjectKeyFromObject(es), es)).To(Succeed())
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{"10.244.1.51"},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}, NodeName: ptr.To(nodeName)})
		Expect(k8s.Update(ctx, es)).To(Succeed())
		eventuallyTable(ctx, ContainSubstring(fmt.Sprintf("-A -t %s:80 -s sh\n-a -t %s:80 -r 10.244.1.50:8080 -m -w 1\n-a -t %s:80 -r 10.244.1.51:8080", vip, vip, vip)))

		By("deleting the invalid policy hands the Service to the defaults")
		Expect(k8s.Delete(ctx, pol)).To(Succeed())
		eventuallyTable(ctx, ContainSubstring(fmt.Sprintf("-A -t %s:80 -s rr", vip)))
	})

	It("after a restart, holds what the kernel has for Services whose policies cannot be read, and reports it", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		svc := service(ns, "held", true, corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)})
		Expect(k8s.Create(ctx, svc)).To(Succeed())
		Expect(k8s.Create(ctx, slice(ns, "held", 8080, map[string]bool{"10.244.1.60": true}))).To(Succeed())
		vip := svc.Spec.ClusterIP
		programmed := fmt.Sprintf("-A -t %s:80 -s rr\n-a -t %s:80 -r 10.244.1.60:8080 -m -w 1", vip, vip)

		node := newIsolatedKernel()
		first := startAgent(ctx, agentConfig{rest: cfg, scheme: k8s.Scheme(), engine: node.engine()})
		Eventually(ctx, node.table).WithTimeout(20 * time.Second).Should(ContainSubstring(programmed))
		first.stop()

		By("restarting the agent while ServicePolicies cannot be listed")
		var fail atomic.Bool
		fail.Store(true)
		second := startAgent(ctx, agentConfig{rest: cfg, scheme: k8s.Scheme(), engine: node.engine(),
			wrap: func(c client.Client) client.Client { return policyListsFail{Client: c, fail: &fail} }})
		defer second.stop()
		second.services.HeldUnreadyAfter = 2 * time.Second
		Eventually(ctx, func() error { return second.startup.ReadyCheck(nil) }).WithTimeout(20 * time.Second).Should(Succeed())
		// The audit runs every second: several sweeps happen in this window.
		Consistently(ctx, node.table).WithTimeout(3*time.Second).Should(ContainSubstring(programmed),
			"a Service that could not be evaluated must not be swept")
		Expect(node.vips.List()).To(ContainElement(netip.MustParseAddr(vip)))
		Eventually(ctx, func() []string { return warningsFor(ctx, k8s, ns, "held") }).Should(ContainElement(agent.HeldDependencyError))
		Eventually(func() error { return second.services.ReadyCheck(nil) }).Should(MatchError(ContainSubstring("Services held for over 2s because their objects cannot be read")),
			"a dependency error that lasts makes the agent unready")

		By("when the API answers again, the Service follows its objects and the agent is ready")
		fail.Store(false)
		Eventually(func() error { return second.services.ReadyCheck(nil) }).WithTimeout(20 * time.Second).Should(Succeed())
		Expect(k8s.Delete(ctx, svc)).To(Succeed())
		Eventually(ctx, node.table).WithTimeout(10 * time.Second).ShouldNot(ContainSubstring(vip))
	})

	It("runs without the ServicePolicy CRD, and applies policies once it is installed", func(ctx SpecContext) {
		bare := &envtest.Environment{}
		bareCfg, err := bare.Start()
		Expect(err).NotTo(HaveOccurred())
		defer func() { Expect(bare.Stop()).To(Succeed()) }()
		scheme := runtime.NewScheme()
		Expect(clientgoscheme.AddToScheme(scheme)).To(Succeed())
		Expect(lbv1alpha1.AddToScheme(scheme)).To(Succeed())
		c, err := client.New(bareCfg, client.Options{Scheme: scheme})
		Expect(err).NotTo(HaveOccurred())

		node := newIsolatedKernel()
		a := startAgent(ctx, agentConfig{rest: bareCfg, scheme: scheme, engine: node.engine()})
		defer a.stop()
		Eventually(ctx, func() error { return a.startup.ReadyCheck(nil) }).WithTimeout(20 * time.Second).Should(Succeed())

		svc := service("default", "nocrd", true, corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)})
		Expect(c.Create(ctx, svc)).To(Succeed())
		es := slice("default", "nocrd", 8080, map[string]bool{"10.244.1.70": true})
		Expect(c.Create(ctx, es)).To(Succeed())
		vip := svc.Spec.ClusterIP
		Eventually(ctx, node.table).WithTimeout(10*time.Second).Should(ContainSubstring(fmt.Sprintf("-A -t %s:80 -s rr\n-a -t %s:80 -r 10.244.1.70:8080", vip, vip)),
			"no CRD means no policy: the defaults apply")
		Expect(a.services.ReadyCheck(nil)).To(Succeed())

		By("installing the CRD and creating a policy")
		_, err = envtest.InstallCRDs(bareCfg, envtest.CRDInstallOptions{Paths: []string{filepath.Join("..", "..", "config", "crd", "bases")}})
		Expect(err).NotTo(HaveOccurred())
		pol := &lbv1alpha1.ServicePolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "lc"},
			Spec: lbv1alpha1.ServicePolicySpec{
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "nocrd"}}, Scheduler: lbv1alpha1.SchedulerLeastConnection,
			},
		}
		Eventually(ctx, func() error { return c.Create(ctx, pol) }).WithTimeout(10 * time.Second).Should(Succeed())
		Eventually(ctx, node.table).WithTimeout(20*time.Second).Should(ContainSubstring(fmt.Sprintf("-A -t %s:80 -s lc", vip)),
			"the policy watch starts once the CRD is served")
	})
})
