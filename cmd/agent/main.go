// Command agent is ipvs-operator's per-node agent: it serves the ClusterIP Services it manages through the
// kernel's IPVS load balancer on the node it runs on.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	goruntime "runtime"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	lbv1alpha1 "github.com/ipvs-operator/ipvs-operator/api/v1alpha1"
	"github.com/ipvs-operator/ipvs-operator/controllers/agent"
	"github.com/ipvs-operator/ipvs-operator/controllers/agent/desired"
	"github.com/ipvs-operator/ipvs-operator/controllers/agent/nodelock"
)

// flags are the agent's command line. Defaults suit the DaemonSet the operator renders.
type flags struct {
	nodeName         string
	ifName           string
	scope            string
	defaultScheduler string
	auditPeriod      time.Duration
	driftCheckPeriod time.Duration
	clusterCIDRs     string
	metricsAddr      string
	probeAddr        string
	workers          int
	cleanup          bool
	sysctlRoot       string
}

func parseFlags(fs *flag.FlagSet, args []string) (flags, error) {
	var f flags
	fs.StringVar(&f.nodeName, "node-name", os.Getenv("NODE_NAME"), "This node's name (default $NODE_NAME). Used for internalTrafficPolicy: Local.")
	fs.StringVar(&f.ifName, "interface", "ipvs0", "The dummy interface that holds the ClusterIPs.")
	fs.StringVar(&f.scope, "scope", "labelled", `Which Services to serve: "labelled" (only those labelled `+
		desired.ProxyNameLabel+"="+desired.ProxyName+`, so kube-proxy can serve the rest) or "all" (clusters without kube-proxy).`)
	fs.StringVar(&f.defaultScheduler, "default-scheduler", string(lbv1alpha1.DefaultScheduler), "The IPVS scheduler of Services no ServicePolicy governs.")
	fs.DurationVar(&f.auditPeriod, "audit-period", time.Minute, "How often to re-read the kernel and repair drift.")
	fs.DurationVar(&f.driftCheckPeriod, "drift-check-period", time.Second, "How often to check, with a few O(1) kernel reads, "+
		"whether the kernel lost the agent's state wholesale (IPVS flushed, dummy interface or nftables table deleted) "+
		"and re-sync at once; 0 disables it (the audit repairs it then).")
	fs.StringVar(&f.clusterCIDRs, "cluster-cidr", "", "Comma-separated pod CIDRs of the cluster. Empty: read them from the Node objects.")
	fs.StringVar(&f.metricsAddr, "metrics-bind-address", ":10271", "Address of the Prometheus metrics and /debug/ipvs endpoint; 0 disables it.")
	fs.StringVar(&f.probeAddr, "health-probe-bind-address", ":10272", "Address of the /healthz and /readyz endpoints.")
	fs.IntVar(&f.workers, "workers", 4, "Services programmed concurrently.")
	fs.StringVar(&f.sysctlRoot, "sysctl-root", "/proc/sys", "Where the host network namespace's sysctls are writable. "+
		"A container's /proc/sys is read-only, so the DaemonSet mounts the host's /proc/sys/net at <root>/net.")
	fs.BoolVar(&f.cleanup, "cleanup", false, "Remove everything the agent owns from the kernel (virtual servers on its ClusterIPs, the dummy interface, its nftables table), print what was removed, and exit. "+
		"If an agent runs on this node, it is asked to do it and then programs nothing more until it ends.")
	if err := fs.Parse(args); err != nil {
		return f, err
	}
	switch {
	case f.nodeName == "" && !f.cleanup:
		return f, errors.New("--node-name (or $NODE_NAME) is required: set it from the downward API (spec.nodeName)")
	case f.scope != "labelled" && f.scope != "all":
		return f, fmt.Errorf(`--scope=%q: must be "labelled" or "all"`, f.scope)
	case !validScheduler(f.defaultScheduler):
		return f, fmt.Errorf("--default-scheduler=%q: must be one of %v", f.defaultScheduler, lbv1alpha1.Schedulers)
	case f.auditPeriod < time.Second:
		return f, fmt.Errorf("--audit-period=%s: must be at least 1s", f.auditPeriod)
	case f.driftCheckPeriod < 0 || (f.driftCheckPeriod > 0 && f.driftCheckPeriod < 100*time.Millisecond):
		return f, fmt.Errorf("--drift-check-period=%s: must be 0 (off) or at least 100ms", f.driftCheckPeriod)
	}
	if _, err := f.podCIDRs(); err != nil {
		return f, err
	}
	return f, nil
}

func validScheduler(s string) bool {
	for _, v := range lbv1alpha1.Schedulers {
		if string(v) == s {
			return true
		}
	}
	return false
}

func (f flags) podCIDRs() ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range strings.Split(f.clusterCIDRs, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("--cluster-cidr: %q is not a CIDR: %w", s, err)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

func main() {
	opts := zap.Options{}
	opts.BindFlags(flag.CommandLine)
	f, err := parseFlags(flag.CommandLine, os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "agent:", err)
		os.Exit(2)
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))
	if err := run(ctrl.SetupSignalHandler(), f); err != nil {
		ctrl.Log.Error(err, "Agent failed")
		os.Exit(1)
	}
}

func run(ctx context.Context, f flags) error {
	log := ctrl.Log.WithName("agent")
	if f.cleanup {
		return runCleanup(ctx, f, os.Stdout)
	}
	// One agent per node, decided before anything touches the kernel: two would sweep each other's state.
	lock, err := nodelock.Acquire(lockName)
	if err != nil {
		return err
	}
	defer goruntime.KeepAlive(lock) // held until the process ends, also while the manager shuts down
	kernel, err := prepareKernel(f)
	if err != nil {
		return err
	}
	// Every controller programs through engine, so that `agent --cleanup` can halt them all at once.
	engine := agent.NewHaltableEngine(kernel.engine, kernel.engine.CleanupReport)

	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	if err := lbv1alpha1.AddToScheme(scheme); err != nil {
		return err
	}
	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
		Scheme:                 scheme,
		HealthProbeBindAddress: f.probeAddr,
		Metrics: metricsserver.Options{
			BindAddress:   f.metricsAddr,
			ExtraHandlers: map[string]http.Handler{"/debug/ipvs": kernel.debugHandler()},
		},
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
			NodeName:         f.nodeName,
			DefaultScheduler: f.defaultScheduler,
			ManageAll:        f.scope == "all",
		},
		Recorder: mgr.GetEventRecorder("ipvs-operator-agent"),
		Clock:    clock.RealClock{},
	}
	// Pod CIDRs come from the flag, or else from the Nodes (and then follow them).
	podCIDRs := func(ctx context.Context) ([]netip.Prefix, error) { return agent.ListPodCIDRs(ctx, mgr.GetClient()) }
	if cidrs, _ := f.podCIDRs(); len(cidrs) > 0 {
		podCIDRs = func(context.Context) ([]netip.Prefix, error) { return cidrs, nil }
	} else if err := (&agent.PodCIDRReconciler{Client: mgr.GetClient(), Engine: engine}).SetupWithManager(mgr); err != nil {
		return err
	}
	startup := agent.NewStartup(agent.StartupConfig{
		Cache: mgr.GetCache(), Client: mgr.GetClient(), Engine: engine,
		Services: services, AuditPeriod: f.auditPeriod, PodCIDRs: podCIDRs, DriftCheckPeriod: f.driftCheckPeriod,
	})
	if err := services.SetupWithManager(mgr, f.workers); err != nil {
		return err
	}
	if err := mgr.Add(startup); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("synced", startup.ReadyCheck); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("services-readable", services.ReadyCheck); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("not-halted", engine.ReadyCheck); err != nil {
		return err
	}
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		return lock.Serve(ctx, controlHandler(engine, f.ifName))
	})); err != nil {
		return err
	}
	log.Info("Starting", "node", f.nodeName, "interface", f.ifName, "scope", f.scope,
		"defaultScheduler", f.defaultScheduler, "auditPeriod", f.auditPeriod)
	return mgr.Start(ctx)
}
