// Command operator is ipvs-operator's cluster-wide half, the Deployment that OLM installs: it renders the agent
// DaemonSet (one agent per node programs that node's kernel IPVS) and writes the status of ServicePolicies.
// It runs leader-elected; the standby replica only serves its health probes.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"os"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/ipvs-operator/ipvs-operator/api/agentconfig"
	"github.com/ipvs-operator/ipvs-operator/api/v1alpha1"
	"github.com/ipvs-operator/ipvs-operator/controllers/operator"
)

// leaderElectionID names the operator's leader election Lease.
const leaderElectionID = "ipvs-operator.lb.ipvs-operator.dev"

var (
	scheme   = runtime.NewScheme()
	setupLog = ctrl.Log.WithName("setup")
)

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(v1alpha1.AddToScheme(scheme))
}

func main() {
	opts, envErr := bindFlags(flag.CommandLine, os.Getenv)
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))

	if err := run(ctrl.SetupSignalHandler(), opts, envErr); err != nil {
		setupLog.Error(err, "Operator stopped")
		os.Exit(1)
	}
}

func run(ctx context.Context, opts *options, envErr error) error {
	if envErr != nil {
		return envErr
	}
	if err := opts.resolveNamespace(os.ReadFile); err != nil {
		return err
	}
	agentConfig, err := opts.agentConfig()
	if err != nil {
		return err
	}

	var tlsOpts []func(*tls.Config)
	if !opts.enableHTTP2 {
		tlsOpts = append(tlsOpts, func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} })
	}
	metricsOptions := metricsserver.Options{
		BindAddress:   opts.metricsAddr,
		SecureServing: opts.secureMetrics,
		TLSOpts:       tlsOpts,
	}
	if opts.secureMetrics {
		metricsOptions.FilterProvider = filters.WithAuthenticationAndAuthorization
	}

	restConfig, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("loading the kubeconfig: %w", err)
	}
	mgr, err := ctrl.NewManager(restConfig, ctrl.Options{
		Scheme:                        scheme,
		Metrics:                       metricsOptions,
		HealthProbeBindAddress:        opts.probeAddr,
		LeaderElection:                opts.leaderElect,
		LeaderElectionID:              leaderElectionID,
		LeaderElectionNamespace:       opts.namespace,
		LeaderElectionReleaseOnCancel: true, // the process exits right after the manager stops
		Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{
			// The operator may only see DaemonSets of its own namespace (a Role, not a ClusterRole).
			&appsv1.DaemonSet{}: {Namespaces: map[string]cache.Config{opts.namespace: {}}},
		}},
	})
	if err != nil {
		return fmt.Errorf("creating the manager: %w", err)
	}

	if err := (&operator.AgentDaemonSetReconciler{Client: mgr.GetClient(), Config: agentConfig}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the agent DaemonSet controller: %w", err)
	}
	if err := (&operator.ServicePolicyReconciler{
		Client:   mgr.GetClient(),
		Recorder: mgr.GetEventRecorder("ipvs-operator"),
	}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the ServicePolicy controller: %w", err)
	}
	if err := (&operator.NotServedReconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Recorder:  mgr.GetEventRecorder("ipvs-operator"),
		ManageAll: agentConfig.Agent.Scope == agentconfig.ScopeAll,
	}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the NotServed controller: %w", err)
	}

	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return fmt.Errorf("adding the health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return fmt.Errorf("adding the ready check: %w", err)
	}

	setupLog.Info("Starting the operator", "namespace", opts.namespace, "agentImage", agentConfig.Image,
		"agentScope", agentConfig.Agent.Scope, "leaderElection", opts.leaderElect)
	if err := mgr.Start(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("running the manager: %w", err)
	}
	return nil
}
