package agent_test

import (
	"context"
	"net/netip"
	"slices"
	"sync"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/sets"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/clock"

	lbv1alpha1 "github.com/ipvs-operator/ipvs-operator/api/v1alpha1"
	"github.com/ipvs-operator/ipvs-operator/ipvs"
	"github.com/ipvs-operator/ipvs-operator/ipvs/fake"
	"github.com/ipvs-operator/ipvs-operator/ipvs/syncer"
	"github.com/ipvs-operator/ipvs-operator/ipvs/takeover"
)

// recordedTakeover wraps a takeover and records, with the engine's calls, when each phase ran.
type recordedTakeover struct {
	*takeover.Takeover
	engine *orderedEngine
	mu     sync.Mutex
	served sets.Set[netip.Addr]
}

func (r *recordedTakeover) Adopt(ctx context.Context, serve sets.Set[netip.Addr]) ([]takeover.Step, error) {
	r.engine.record("Takeover.Adopt")
	r.mu.Lock()
	r.served = serve.Clone()
	r.mu.Unlock()
	return r.Takeover.Adopt(ctx, serve)
}

func (r *recordedTakeover) RemoveLeftovers(ctx context.Context) ([]takeover.Step, error) {
	r.engine.record("Takeover.RemoveLeftovers")
	return r.Takeover.RemoveLeftovers(ctx)
}

// keyedIPVS records the keys of the virtual servers created and deleted: the suite's other Services are
// programmed by this agent too.
type keyedIPVS struct {
	*fake.IPVS
	mu             sync.Mutex
	added, deleted []ipvs.ServiceKey
}

func (k *keyedIPVS) AddService(s ipvs.Service) error {
	k.mu.Lock()
	k.added = append(k.added, s.ServiceKey)
	k.mu.Unlock()
	return k.IPVS.AddService(s)
}

func (k *keyedIPVS) DeleteService(key ipvs.ServiceKey) error {
	k.mu.Lock()
	k.deleted = append(k.deleted, key)
	k.mu.Unlock()
	return k.IPVS.DeleteService(key)
}

// A second agent whose fake kernel holds what kube-proxy's IPVS mode left for a Service it serves: it binds
// the ClusterIP on its own device before it first reads the kernel, edits kube-proxy's virtual server in
// place, and removes kube-ipvs0 only after its first full sync.
var _ = Describe("an agent taking over from kube-proxy's IPVS mode", func() {
	It("adopts kube-proxy's virtual server before its first read and removes kube-ipvs0 after its first sync", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		svc := service(ns, "web", true, corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP})
		Expect(k8s.Create(ctx, svc)).To(Succeed())
		Expect(k8s.Create(ctx, slice(ns, "web", 8080, map[string]bool{"10.244.9.2": true, "10.244.9.3": true}))).To(Succeed())
		vip := netip.MustParseAddr(svc.Spec.ClusterIP)

		// kube-proxy's state: the virtual server with one endpoint that has since gone (10.244.9.4).
		kern, dummy, kubeIPVS0 := &keyedIPVS{IPVS: fake.New()}, fake.NewVIPs(), fake.NewVIPs()
		k := ipvs.ServiceKey{Address: vip, Port: 80, Protocol: ipvs.TCP}
		Expect(kern.IPVS.AddService(ipvs.Service{ServiceKey: k, Scheduler: "rr"})).To(Succeed()) // not recorded: kube-proxy did it
		for _, ip := range []string{"10.244.9.2", "10.244.9.4"} {
			Expect(kern.AddDestination(k, ipvs.Destination{DestinationKey: ipvs.DestinationKey{Address: netip.MustParseAddr(ip), Port: 8080}, Weight: 1})).To(Succeed())
		}
		Expect(kubeIPVS0.EnsureInterface()).To(Succeed())
		Expect(kubeIPVS0.Bind(vip)).To(Succeed())

		scheme := runtime.NewScheme()
		Expect(clientgoscheme.AddToScheme(scheme)).To(Succeed())
		Expect(lbv1alpha1.AddToScheme(scheme)).To(Succeed())
		eng := &orderedEngine{Engine: syncer.New(kern, dummy, fake.NewRules(), clock.RealClock{}, syncer.Options{})}
		tk := &recordedTakeover{Takeover: &takeover.Takeover{Agent: dummy, KubeProxy: kubeIPVS0, AgentDevice: "ipvs0"}, engine: eng}
		a := startAgent(ctx, agentConfig{rest: cfg, scheme: scheme, engine: eng, takeover: tk})
		DeferCleanup(a.stop)

		Eventually(ctx, func() bool { return kubeIPVS0.InterfaceExists() }).Should(BeFalse(), "kube-ipvs0 removed")
		calls := slices.DeleteFunc(eng.Calls(), func(c string) bool { return c != "Takeover.Adopt" && c != "Adopt" && c != "Takeover.RemoveLeftovers" })
		Expect(calls).To(Equal([]string{"Takeover.Adopt", "Adopt", "Takeover.RemoveLeftovers"}))
		Expect(a.startup.ReadyCheck(nil)).To(Succeed(), "leftovers go only after the first full sync")
		tk.mu.Lock()
		Expect(tk.served.Has(vip)).To(BeTrue())
		tk.mu.Unlock()

		Expect(dummy.List()).To(ContainElement(vip))
		Expect(dummy.Ops()[fake.Unbind]).To(BeZero())
		kern.mu.Lock()
		Expect(kern.added).NotTo(ContainElement(k), "kube-proxy's virtual server is edited in place, not created again")
		Expect(kern.deleted).NotTo(ContainElement(k), "kube-proxy's virtual server is edited in place, not deleted")
		kern.mu.Unlock()
		got, err := ipvs.Snapshot(kern)
		Expect(err).NotTo(HaveOccurred())
		Expect(ipvs.Render(got)).To(ContainSubstring("-A -t " + vip.String() + ":80 -s rr\n" +
			"-a -t " + vip.String() + ":80 -r 10.244.9.2:8080 -m -w 1\n" +
			"-a -t " + vip.String() + ":80 -r 10.244.9.3:8080 -m -w 1\n"))
	})
})
