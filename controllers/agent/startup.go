package agent

import (
	"context"
	"errors"
	"net/http"
	"net/netip"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
)

// ErrNotSynced is what the readiness check answers until the first full sync reached the kernel.
var ErrNotSynced = errors.New("the first full sync to the kernel has not finished")

// Startup is the agent's lifecycle runnable: once the caches are filled it adopts the kernel's state, programs
// every Service once, sweeps what no Service claims any more, reports ready, and then audits periodically.
type Startup struct {
	StartupConfig
	gate   chan struct{}
	synced atomic.Bool
}

// StartupConfig is what the lifecycle runnable works with.
type StartupConfig struct {
	Cache       cache.Cache
	Client      client.Client
	Engine      Engine
	Services    *ServiceReconciler
	AuditPeriod time.Duration
	// PodCIDRs says which sources are pods. It is asked once the caches are filled and before the kernel
	// state is adopted: adopting re-ensures the nftables table, and a guard that does not yet know the pod
	// CIDRs would refuse pods' new connections to ClusterIPs until it learns them.
	PodCIDRs func(ctx context.Context) ([]netip.Prefix, error)
}

// NewStartup returns a Startup whose gate the ServiceReconciler waits on.
func NewStartup(cfg StartupConfig) *Startup {
	s := &Startup{StartupConfig: cfg, gate: make(chan struct{})}
	cfg.Services.Gate = s.gate
	return s
}

// Start implements manager.Runnable.
func (s *Startup) Start(ctx context.Context) error {
	log := logf.FromContext(ctx).WithName("startup")
	if !s.Cache.WaitForCacheSync(ctx) {
		return ctx.Err()
	}
	t0 := time.Now()
	if s.PodCIDRs != nil {
		cidrs, err := s.PodCIDRs(ctx)
		if err != nil {
			return err
		}
		if len(cidrs) == 0 {
			log.Info("No pod CIDRs known (no --cluster-cidr, no Node has spec.podCIDRs): pods reaching " +
				"ClusterIPs are refused by the outside guard; set --cluster-cidr")
		}
		if err := s.Engine.SetPodCIDRs(ctx, cidrs); err != nil {
			return err
		}
	}
	if err := s.Engine.Adopt(ctx); err != nil {
		return err // the manager exits and the kubelet restarts us: better than programming blind
	}
	close(s.gate)

	list := &corev1.ServiceList{}
	if err := s.Client.List(ctx, list); err != nil {
		return err
	}
	failed := 0
	for i := range list.Items {
		// A Service that cannot be evaluated is held by its ClusterIPs, so the audit below never sweeps it.
		if _, err := s.Services.syncService(ctx, client.ObjectKeyFromObject(&list.Items[i]), &list.Items[i]); err != nil {
			failed++ // the controller retries it; one bad Service must not keep the node unready
		}
	}
	if err := s.audit(ctx); err != nil {
		log.Error(err, "First audit failed; will retry", "period", s.AuditPeriod)
	}
	s.synced.Store(true)
	log.Info("First full sync done", "services", len(list.Items), "failed", failed, "duration", time.Since(t0))

	wait.UntilWithContext(ctx, func(ctx context.Context) {
		if err := s.audit(ctx); err != nil {
			log.Error(err, "Audit failed")
		}
	}, s.AuditPeriod)
	return nil
}

func (s *Startup) audit(ctx context.Context) error {
	t0 := time.Now()
	defer func() { metricAuditDuration.Observe(time.Since(t0).Seconds()) }()
	return s.Engine.Audit(ctx)
}

// ReadyCheck is a healthz.Checker: ready only once the first full sync reached the kernel.
func (s *Startup) ReadyCheck(*http.Request) error {
	if !s.synced.Load() {
		return ErrNotSynced
	}
	return nil
}

// NeedLeaderElection implements manager.LeaderElectionRunnable: every node's agent runs.
func (s *Startup) NeedLeaderElection() bool { return false }
