package agent_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	lbv1alpha1 "github.com/ipvs-operator/ipvs-operator/api/v1alpha1"
	"github.com/ipvs-operator/ipvs-operator/controllers/agent"
	"github.com/ipvs-operator/ipvs-operator/controllers/agent/desired"
	"github.com/ipvs-operator/ipvs-operator/ipvs"
	"github.com/ipvs-operator/ipvs-operator/ipvs/fake"
	"github.com/ipvs-operator/ipvs-operator/ipvs/syncer"
)

// These specs run the agent's controllers against a real kube-apiserver (envtest) and an in-memory kernel:
// they prove the Kubernetes side (watches, indexes, policy resolution, start-up) converges the model. The
// real kernel is proven by the lab suite.

const nodeName = "node-a"

// orderedEngine records the order of the engine's start-up calls.
type orderedEngine struct {
	agent.Engine
	mu    sync.Mutex
	calls []string
}

func (e *orderedEngine) record(call string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.calls = append(e.calls, call)
}

func (e *orderedEngine) Calls() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.calls...)
}

func (e *orderedEngine) Adopt(ctx context.Context) error {
	e.record("Adopt")
	return e.Engine.Adopt(ctx)
}

func (e *orderedEngine) SetPodCIDRs(ctx context.Context, cidrs []netip.Prefix) error {
	e.record(fmt.Sprintf("SetPodCIDRs%v", cidrs))
	return e.Engine.SetPodCIDRs(ctx, cidrs)
}

var (
	engine  *orderedEngine
	testEnv *envtest.Environment
	cfg     *rest.Config
	k8s     client.Client
	kernel  *fake.IPVS
	vips    *fake.VIPs
	rules   *fake.Rules
	startup *agent.Startup
	cancel  context.CancelFunc
)

func TestAgent(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Agent controllers (envtest + fake kernel)")
}

var _ = BeforeSuite(func() {
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	// As the agent's main does: the drift spec reads the canary's counter from this registry.
	Expect(agent.RegisterMetrics(metrics.Registry)).To(Succeed())
	Expect(os.Getenv("KUBEBUILDER_ASSETS")).NotTo(BeEmpty(),
		"KUBEBUILDER_ASSETS is not set: run `make envtest` and use `make test` (it points at bin/k8s/1.37.1)")

	testEnv = &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	// Dual-stack, so a Service can be upgraded to two ClusterIPs in place.
	testEnv.ControlPlane.GetAPIServer().Configure().Set("service-cluster-ip-range", "10.0.0.0/24,fd00:10:96::/112")
	var err error
	cfg, err = testEnv.Start()
	Expect(err).NotTo(HaveOccurred())

	scheme := runtime.NewScheme()
	Expect(clientgoscheme.AddToScheme(scheme)).To(Succeed())
	Expect(lbv1alpha1.AddToScheme(scheme)).To(Succeed())
	k8s, err = client.New(cfg, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())

	// A previous agent left a virtual server for a VIP that no Service will claim: the first sweep removes
	// it. Someone else's virtual server (VIP not on our dummy) must survive everything.
	kernel, vips, rules = fake.New(), fake.NewVIPs(), fake.NewRules()
	Expect(vips.EnsureInterface()).To(Succeed())
	stale := ipvs.Service{ServiceKey: key("10.96.200.200", 80, ipvs.TCP), Scheduler: "rr"}
	Expect(vips.Bind(stale.Address)).To(Succeed())
	Expect(kernel.AddService(stale)).To(Succeed())
	Expect(kernel.AddService(ipvs.Service{ServiceKey: key("198.51.100.7", 80, ipvs.TCP), Scheduler: "wlc"})).To(Succeed())

	ctx, c := context.WithCancel(context.Background())
	cancel = c
	// A Node with a pod CIDR exists before the agent starts, as in any cluster.
	Expect(k8s.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName},
		Spec: corev1.NodeSpec{PodCIDR: "10.244.9.0/24", PodCIDRs: []string{"10.244.9.0/24"}}})).To(Succeed())
	engine = &orderedEngine{Engine: syncer.New(kernel, vips, rules, clock.RealClock{}, syncer.Options{Metrics: agent.EngineMetrics{}})}
	a := startAgent(ctx, agentConfig{rest: cfg, scheme: scheme, engine: engine, podCIDRReconciler: true, health: healthChecker})
	startup = a.startup
})

// agentConfig is one agent process as cmd/agent wires it, against an API server and a kernel.
type agentConfig struct {
	rest   *rest.Config
	scheme *runtime.Scheme
	engine agent.Engine
	// wrap, if set, wraps the manager's client as the agent's controllers see it (to inject API errors).
	wrap              func(client.Client) client.Client
	podCIDRReconciler bool
	// health, if set, probes for the agent (health_envtest_test.go); it writes the node's reports unless
	// noReports is set (a second agent of the same node name).
	health    *agent.HealthChecker
	noReports bool
	// adopted, if set, is the engine's table after adoption (slow-start ramps resume from it).
	adopted func() []ipvs.VirtualServer
	// takeover, if set, takes over from kube-proxy (takeover_envtest_test.go).
	takeover agent.Takeover
}

type runningAgent struct {
	startup  *agent.Startup
	services *agent.ServiceReconciler
	stop     func()
}

// startAgent starts an agent's manager; stop ends it and waits until it has.
func startAgent(ctx context.Context, ac agentConfig) runningAgent {
	GinkgoHelper()
	mgr, err := ctrl.NewManager(ac.rest, ctrl.Options{
		Scheme: ac.scheme, Metrics: metricsserver.Options{BindAddress: "0"}, Cache: agent.CacheOptions(),
		Controller: config.Controller{SkipNameValidation: ptr.To(true)}, // several agents in one process
	})
	Expect(err).NotTo(HaveOccurred())
	ctx, cancel := context.WithCancel(ctx)
	Expect(agent.IndexEndpointSlices(ctx, mgr.GetFieldIndexer())).To(Succeed())
	c := mgr.GetClient()
	if ac.wrap != nil {
		c = ac.wrap(c)
	}
	services := &agent.ServiceReconciler{
		Client:          c,
		Engine:          ac.engine,
		Options:         desired.Options{NodeName: nodeName, DefaultScheduler: "rr"},
		Recorder:        mgr.GetEventRecorder("ipvs-operator-agent"),
		Clock:           clock.RealClock{},
		CRDPollInterval: 500 * time.Millisecond,
		Health:          ac.health,
		Adopted:         ac.adopted,
	}
	if ac.health != nil {
		if !ac.noReports {
			ac.health.ReportTo(k8s, nodeName, 100*time.Millisecond)
		}
		Expect(mgr.Add(ac.health)).To(Succeed())
	}
	podCIDRs := &agent.PodCIDRReconciler{Client: c, Engine: ac.engine, NodeName: nodeName}
	st := agent.NewStartup(agent.StartupConfig{
		Cache: mgr.GetCache(), Client: c, Engine: ac.engine, Services: services, AuditPeriod: time.Second,
		DriftCheckPeriod: 100 * time.Millisecond, PodCIDRs: podCIDRs.PodCIDRs, Takeover: ac.takeover,
	})
	Expect(services.SetupWithManager(mgr, 2)).To(Succeed())
	if ac.podCIDRReconciler {
		Expect(podCIDRs.SetupWithManager(mgr)).To(Succeed())
	}
	Expect(mgr.Add(st)).To(Succeed())
	done := make(chan struct{})
	go func() {
		defer GinkgoRecover()
		defer close(done)
		Expect(mgr.Start(ctx)).To(Succeed())
	}()
	return runningAgent{startup: st, services: services, stop: func() { cancel(); <-done }}
}

var _ = AfterSuite(func() {
	if cancel != nil {
		cancel()
	}
	if testEnv != nil {
		Expect(testEnv.Stop()).To(Succeed())
	}
})

func key(ip string, port uint16, proto ipvs.Protocol) ipvs.ServiceKey {
	return ipvs.ServiceKey{Address: netip.MustParseAddr(ip), Port: port, Protocol: proto}
}

// table is the fake kernel's state in `ipvsadm -Sn` notation, the same rendering users see on a node.
func table() string {
	vs, err := ipvs.Snapshot(kernel)
	Expect(err).NotTo(HaveOccurred())
	return ipvs.Render(vs)
}
