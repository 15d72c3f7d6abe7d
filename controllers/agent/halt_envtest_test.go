package agent_test

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	lbv1alpha1 "github.com/ipvs-operator/ipvs-operator/api/v1alpha1"
	"github.com/ipvs-operator/ipvs-operator/controllers/agent"
	"github.com/ipvs-operator/ipvs-operator/controllers/agent/desired"
	"github.com/ipvs-operator/ipvs-operator/ipvs"
	"github.com/ipvs-operator/ipvs-operator/ipvs/fake"
	"github.com/ipvs-operator/ipvs-operator/ipvs/syncer"
)

// A second agent, on its own fake kernel, serving every Service (so the suite's agent, which serves only
// labelled ones, does not see this spec's Service): halted while its controllers and audits run, it must
// put nothing back, whatever the cluster does next.
var _ = Describe("an agent halted for an uninstall", func() {
	It("removes its kernel state and programs nothing more: no reconcile, no audit, no pod-CIDR change", func(ctx SpecContext) {
		kern, dummy, nft := fake.New(), fake.NewVIPs(), fake.NewRules()
		ipvsEngine := syncer.New(kern, dummy, nft, clock.RealClock{}, syncer.Options{})
		halting := agent.NewHaltableEngine(ipvsEngine, ipvsEngine.CleanupReport)

		scheme := runtime.NewScheme()
		Expect(clientgoscheme.AddToScheme(scheme)).To(Succeed())
		Expect(lbv1alpha1.AddToScheme(scheme)).To(Succeed())
		mgr, err := ctrl.NewManager(cfg, ctrl.Options{
			Scheme: scheme, Metrics: metricsserver.Options{BindAddress: "0"},
			// The suite's agent already registered controllers with these names in this process.
			Controller: config.Controller{SkipNameValidation: ptr.To(true)},
		})
		Expect(err).NotTo(HaveOccurred())
		mctx, stop := context.WithCancel(ctx)
		DeferCleanup(stop)
		Expect(agent.IndexEndpointSlices(mctx, mgr.GetFieldIndexer())).To(Succeed())
		services := &agent.ServiceReconciler{
			Client: mgr.GetClient(), Engine: halting, Recorder: mgr.GetEventRecorder("halt-test"), Clock: clock.RealClock{},
			Options: desired.Options{NodeName: nodeName, DefaultScheduler: "rr", ManageAll: true},
		}
		// Its Node, halt-node, appears (with a pod CIDR) only once the agent is halted.
		podCIDRs := &agent.PodCIDRReconciler{Client: mgr.GetClient(), Engine: halting, NodeName: "halt-node"}
		st := agent.NewStartup(agent.StartupConfig{
			Cache: mgr.GetCache(), Client: mgr.GetClient(), Engine: halting, Services: services, AuditPeriod: time.Second,
			PodCIDRs: podCIDRs.PodCIDRs,
		})
		Expect(services.SetupWithManager(mgr, 2)).To(Succeed())
		Expect(podCIDRs.SetupWithManager(mgr)).To(Succeed())
		Expect(mgr.Add(st)).To(Succeed())
		go func() {
			defer GinkgoRecover()
			Expect(mgr.Start(mctx)).To(Succeed())
		}()

		ns := newNamespace(ctx)
		svc := service(ns, "bye", false, corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromString("http")})
		Expect(k8s.Create(ctx, svc)).To(Succeed())
		es := slice(ns, "bye", 8080, map[string]bool{"10.244.1.2": true})
		Expect(k8s.Create(ctx, es)).To(Succeed())
		vip := svc.Spec.ClusterIP
		render := func() string {
			vs, err := ipvs.Snapshot(kern)
			Expect(err).NotTo(HaveOccurred())
			return ipvs.Render(vs)
		}
		Eventually(ctx, render).WithTimeout(20 * time.Second).Should(ContainSubstring(fmt.Sprintf("-a -t %s:80 -r 10.244.1.2:8080", vip)))
		Eventually(ctx, func() error { return st.ReadyCheck(nil) }).WithTimeout(20 * time.Second).Should(Succeed())

		removed, err := halting.Halt(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(removed.VirtualServers).To(ContainElement(ipvs.ServiceKey{Address: netip.MustParseAddr(vip), Port: 80, Protocol: ipvs.TCP}))
		Expect(halting.ReadyCheck(nil)).To(MatchError(agent.ErrHalted))

		By("changing the Service's endpoints, adding a Service and a Node's pod CIDR, and waiting 3 audit periods")
		es.Endpoints = append(es.Endpoints, slice(ns, "bye", 8080, map[string]bool{"10.244.1.3": true}).Endpoints...)
		Expect(k8s.Update(ctx, es)).To(Succeed())
		other := service(ns, "another", false, corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)})
		Expect(k8s.Create(ctx, other)).To(Succeed())
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "halt-node"},
			Spec: corev1.NodeSpec{PodCIDR: "10.244.77.0/24", PodCIDRs: []string{"10.244.77.0/24"}}}
		Expect(k8s.Create(ctx, node)).To(Succeed())
		DeferCleanup(func(ctx SpecContext) { Expect(k8s.Delete(ctx, node)).To(Succeed()) })
		Consistently(ctx, func() []string {
			var left []string
			if r := render(); r != "" {
				left = append(left, r)
			}
			if dummy.InterfaceExists() {
				left = append(left, "the dummy interface")
			}
			if nft.TableExists() {
				left = append(left, "the nftables table")
			}
			return left
		}).WithTimeout(3 * time.Second).WithPolling(100 * time.Millisecond).Should(BeEmpty())
	})
})
