package agent_test

import (
	"context"
	"net/netip"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	lbv1alpha1 "github.com/ipvs-operator/ipvs-operator/api/v1alpha1"
	"github.com/ipvs-operator/ipvs-operator/controllers/agent"
	"github.com/ipvs-operator/ipvs-operator/controllers/agent/desired"
	"github.com/ipvs-operator/ipvs-operator/ipvs/fake"
	"github.com/ipvs-operator/ipvs-operator/ipvs/syncer"
)

// A second agent, on its own fake kernel, whose Node has no pod CIDRs (as with Calico IPAM, Cilium
// cluster-pool or the AWS VPC CNI) in the default NodeCIDR mode: it cannot tell its pods from the outside.
var _ = Describe("an agent whose Node has no pod CIDRs (NodeCIDR mode)", func() {
	It("is not ready, with a Warning Event on its Node naming the fix, until the Node gets pod CIDRs", func(ctx SpecContext) {
		const bare = "bare-node"
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: bare}}
		Expect(k8s.Create(ctx, node)).To(Succeed())
		DeferCleanup(func(ctx SpecContext) { Expect(k8s.Delete(ctx, node)).To(Succeed()) })

		kern, dummy, nft := fake.New(), fake.NewVIPs(), fake.NewRules()
		ipvsEngine := syncer.New(kern, dummy, nft, clock.RealClock{}, syncer.Options{})
		scheme := runtime.NewScheme()
		Expect(clientgoscheme.AddToScheme(scheme)).To(Succeed())
		Expect(lbv1alpha1.AddToScheme(scheme)).To(Succeed())
		mgr, err := ctrl.NewManager(cfg, ctrl.Options{
			Scheme: scheme, Metrics: metricsserver.Options{BindAddress: "0"}, Cache: agent.CacheOptions(),
			Controller: config.Controller{SkipNameValidation: ptr.To(true)},
		})
		Expect(err).NotTo(HaveOccurred())
		mctx, stop := context.WithCancel(ctx)
		DeferCleanup(stop)
		Expect(agent.IndexEndpointSlices(mctx, mgr.GetFieldIndexer())).To(Succeed())
		services := &agent.ServiceReconciler{
			Client: mgr.GetClient(), Engine: ipvsEngine, Recorder: mgr.GetEventRecorder("detect-test"), Clock: clock.RealClock{},
			Options: desired.Options{NodeName: bare, DefaultScheduler: "rr"},
		}
		detection := &agent.PodDetection{}
		podCIDRs := &agent.PodCIDRReconciler{Client: mgr.GetClient(), Engine: ipvsEngine, NodeName: bare,
			Detection: detection, Recorder: mgr.GetEventRecorder("ipvs-operator-agent")}
		st := agent.NewStartup(agent.StartupConfig{
			Cache: mgr.GetCache(), Client: mgr.GetClient(), Engine: ipvsEngine, Services: services, AuditPeriod: time.Second,
			PodCIDRs: podCIDRs.PodCIDRs,
		})
		Expect(services.SetupWithManager(mgr, 1)).To(Succeed())
		Expect(podCIDRs.SetupWithManager(mgr)).To(Succeed())
		Expect(mgr.Add(st)).To(Succeed())
		go func() {
			defer GinkgoRecover()
			Expect(mgr.Start(mctx)).To(Succeed())
		}()

		By("syncing fully, yet reporting pod detection impossible")
		Eventually(ctx, func() error { return st.ReadyCheck(nil) }).WithTimeout(20 * time.Second).Should(Succeed())
		err = detection.ReadyCheck(nil)
		Expect(err).To(MatchError(agent.ErrNoPodCIDRs))
		Expect(err.Error()).To(And(ContainSubstring("node "+bare+" has no spec.podCIDRs"),
			ContainSubstring("--detect-local-mode=ClusterCIDR with --cluster-cidr"), ContainSubstring("AGENT_DETECT_LOCAL_MODE")))
		Expect(nft.PodCIDRs()).To(BeEmpty())

		By("a single Warning Event on the Node")
		nodeEvents := func(ctx context.Context) ([]eventsv1.Event, error) {
			list := &eventsv1.EventList{}
			if err := k8s.List(ctx, list, client.InNamespace(metav1.NamespaceDefault)); err != nil {
				return nil, err
			}
			var out []eventsv1.Event
			for _, e := range list.Items {
				if e.Regarding.Kind == "Node" && e.Regarding.Name == bare && e.Reason == "PodCIDRsMissing" {
					out = append(out, e)
				}
			}
			return out, nil
		}
		Eventually(ctx, nodeEvents).WithTimeout(10 * time.Second).Should(ConsistOf(And(
			HaveField("Type", corev1.EventTypeWarning),
			HaveField("Note", ContainSubstring("--detect-local-mode=ClusterCIDR")),
		)))
		// A label change is no pod-CIDR change, and a repeated failure is no news: no second Event.
		Expect(k8s.Get(ctx, client.ObjectKeyFromObject(node), node)).To(Succeed())
		node.Labels = map[string]string{"touched": "yes"}
		Expect(k8s.Update(ctx, node)).To(Succeed())
		Consistently(ctx, nodeEvents).WithTimeout(2 * time.Second).Should(HaveLen(1))

		By("becoming ready once the Node has pod CIDRs, and guarding with them")
		node.Spec.PodCIDR, node.Spec.PodCIDRs = "10.244.8.0/24", []string{"10.244.8.0/24"}
		Expect(k8s.Update(ctx, node)).To(Succeed())
		Eventually(ctx, func() error { return detection.ReadyCheck(nil) }).WithTimeout(10 * time.Second).Should(Succeed())
		Eventually(nft.PodCIDRs).WithTimeout(10 * time.Second).Should(Equal([]netip.Prefix{netip.MustParsePrefix("10.244.8.0/24")}))
	})
})
