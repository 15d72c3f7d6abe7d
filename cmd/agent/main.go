// Command agent is ipvs-operator's per-node agent: it serves the ClusterIP Services it manages through the
// kernel's IPVS load balancer on the node it runs on.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	goruntime "runtime"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/ipvs-operator/ipvs-operator/api/agentconfig"
	lbv1alpha1 "github.com/ipvs-operator/ipvs-operator/api/v1alpha1"
	"github.com/ipvs-operator/ipvs-operator/controllers/agent"
	"github.com/ipvs-operator/ipvs-operator/controllers/agent/desired"
	"github.com/ipvs-operator/ipvs-operator/controllers/agent/health"
	"github.com/ipvs-operator/ipvs-operator/controllers/agent/nodelock"
	"github.com/ipvs-operator/ipvs-operator/ipvs/host"
)

// flags are the agent's command line: the contract the operator renders the DaemonSet's arguments from.
type flags = agentconfig.Config

// parseFlags parses args with the agent's flags bound on fs, defaulting --node-name to getenv(NODE_NAME),
// and validates the result.
func parseFlags(fs *flag.FlagSet, args []string, getenv func(string) string) (flags, error) {
	f := agentconfig.Default()
	f.NodeName = getenv(agentconfig.NodeNameEnv)
	f.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		return f, err
	}
	return f, f.Validate()
}

func main() {
	opts := zap.Options{}
	opts.BindFlags(flag.CommandLine)
	f, err := parseFlags(flag.CommandLine, os.Args[1:], os.Getenv)
	if err != nil {
		fmt.Fprintln(os.Stderr, "agent:", err)
		os.Exit(2)
	}
	ctrl.SetLogger(lazyValues(zap.New(zap.UseFlagOptions(&opts))))
	if err := run(ctrl.SetupSignalHandler(), f); err != nil {
		ctrl.Log.Error(err, "Agent failed")
		os.Exit(1)
	}
}

func run(ctx context.Context, f flags) error {
	tuneGC(os.Getenv)
	log := ctrl.Log.WithName("agent")
	if f.Cleanup {
		return runCleanup(ctx, f, os.Stdout)
	}
	if f.LoadModules {
		return loadModules(&host.Loader{}, os.Stdout)
	}
	// One agent per node, decided before anything touches the kernel: two would sweep each other's state.
	lock, err := nodelock.Acquire(lockName)
	if err != nil {
		return err
	}
	defer goruntime.KeepAlive(lock) // held until the process ends, also while the manager shuts down
	restConfig := ctrl.GetConfigOrDie()
	ipv6, err := nodeServesIPv6(ctx, restConfig, f)
	if err != nil {
		return err
	}
	kernel, err := prepareKernel(f, ipv6)
	if err != nil {
		return err
	}
	// Every controller programs through halting (inside engine), so that `agent --cleanup` can halt them all at once.
	halting := agent.NewHaltableEngine(kernel.engine, kernel.engine.CleanupReport)
	// The probes watch every call: liveness fails on a call stuck in the kernel, readiness on programming
	// that keeps failing.
	engine := agent.NewWatchedEngine(halting, agent.WatchConfig{Clock: clock.RealClock{}, AuditPeriod: f.AuditPeriod})

	// The manager serves controller-runtime's registry on --metrics-bind-address.
	if err := agent.RegisterMetrics(metrics.Registry); err != nil {
		return err
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	if err := lbv1alpha1.AddToScheme(scheme); err != nil {
		return err
	}
	mgr, err := ctrl.NewManager(restConfig, ctrl.Options{
		Scheme:                 scheme,
		Cache:                  agent.CacheOptions(),
		HealthProbeBindAddress: f.HealthAddress,
		// Authenticated and authorized HTTPS; /healthz and /readyz stay on their own port, which tells only
		// ok or not.
		Metrics: agent.MetricsServerOptions(f.MetricsAddress, agent.DebugHandler(kernel.engine.Programmed)),
		// Every node programs its own kernel: nothing to elect.
		LeaderElection: false,
	})
	if err != nil {
		return err
	}

	if err := agent.IndexEndpointSlices(ctx, mgr.GetFieldIndexer()); err != nil {
		return err
	}
	services := &agent.ServiceReconciler{
		Client: mgr.GetClient(),
		Engine: engine,
		Options: desired.Options{
			NodeName:         f.NodeName,
			DefaultScheduler: string(f.DefaultScheduler),
			ManageAll:        f.Scope == agentconfig.ScopeAll,
		},
		Recorder: mgr.GetEventRecorder("ipvs-operator-agent"),
		Clock:    clock.RealClock{},
		// Probes run from this process, in the node's network namespace (hostNetwork).
		// A restarted agent remembers which real servers the previous one had at weight 0.
		Health: agent.NewHealthChecker(health.Options{}, kernel.engine.Programmed),
		// A restarted agent resumes slow-start ramps from the kernel's weights.
		Adopted: kernel.engine.Programmed,
	}
	// The node's HealthCheckStatus reports are written without a cache: the agent never watches other
	// nodes' reports.
	direct, err := client.New(restConfig, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	services.Health.ReportTo(direct, f.NodeName, 0)
	if err := mgr.Add(services.Health); err != nil {
		return err
	}
	podCIDRs, err := setupPodDetection(mgr, f, engine)
	if err != nil {
		return err
	}
	tk, err := kernel.takeoverFrom(f)
	if err != nil {
		return err
	}
	startup := agent.NewStartup(agent.StartupConfig{Takeover: tk,
		Cache: mgr.GetCache(), Client: mgr.GetClient(), Engine: engine,
		Services: services, AuditPeriod: f.AuditPeriod, PodCIDRs: podCIDRs, DriftCheckPeriod: f.DriftCheckPeriod,
		Workers: f.Workers,
	})
	if err := services.SetupWithManager(mgr, f.Workers); err != nil {
		return err
	}
	if err := mgr.Add(startup); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("engine-not-wedged", engine.LiveCheck); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("synced", startup.ReadyCheck); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("services-readable", services.ReadyCheck); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("not-halted", halting.ReadyCheck); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("programming", engine.ReadyCheck); err != nil {
		return err
	}
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		return lock.Serve(ctx, controlHandler(halting, f))
	})); err != nil {
		return err
	}
	log.Info("Starting", "node", f.NodeName, "interface", f.Interface, "scope", f.Scope,
		"defaultScheduler", f.DefaultScheduler, "auditPeriod", f.AuditPeriod, "detectLocalMode", f.DetectLocalMode,
		"takeoverKubeProxyIPVS", f.TakeoverKubeProxyIPVS)
	return mgr.Start(ctx)
}
