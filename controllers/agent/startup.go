package agent

import (
	"context"
	"errors"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/ipvs-operator/ipvs-operator/ipvs/syncer"
)

// ErrNotSynced is what the readiness check answers until the first full sync reached the kernel.
var ErrNotSynced = errors.New("the first full sync to the kernel has not finished")

// Startup is the agent's lifecycle runnable: once the caches are filled it adopts the kernel's state, programs
// every Service once, sweeps what no Service claims any more, reports ready, and then audits periodically.
type Startup struct {
	StartupConfig
	gate   chan struct{}
	synced atomic.Bool
	// leftoversGone: the takeover removed kube-proxy's leftovers.
	leftoversGone atomic.Bool
}

// StartupConfig is what the lifecycle runnable works with.
type StartupConfig struct {
	Cache       cache.Cache
	Client      client.Client
	Engine      Engine
	Services    *ServiceReconciler
	AuditPeriod time.Duration
	// DriftCheckPeriod is how often the drift canary runs (a few O(1) kernel reads); 0 disables it, leaving
	// a flushed kernel to the next audit.
	DriftCheckPeriod time.Duration
	// PodCIDRs says which sources are pods; nil when pods are told by interface. It is asked once the caches are filled and before the kernel
	// state is adopted: adopting re-ensures the nftables table, and a guard that does not yet know the pod
	// CIDRs would refuse pods' new connections to ClusterIPs until it learns them.
	PodCIDRs func(ctx context.Context) ([]netip.Prefix, error)
	// Takeover, if set, takes the node over from kube-proxy's IPVS mode (see takeover.go).
	Takeover Takeover
	// Workers is how many Services the start-up pass syncs at once (the controller's --workers); 0 means 1.
	Workers int
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
			log.Info("No pod CIDRs known: pods reaching ClusterIPs are refused by the outside guard " +
				"until there are (the readiness check pod-detection says why)")
		}
		if err := s.Engine.SetPodCIDRs(ctx, cidrs); err != nil {
			return err
		}
	}
	if s.Takeover != nil {
		if err := s.takeoverAdopt(ctx); err != nil {
			return err
		}
	}
	if err := s.Engine.Adopt(ctx); err != nil {
		return err // the manager exits and the kubelet restarts us: better than programming blind
	}

	list := &corev1.ServiceList{}
	// Read only: not a deep copy of every Service held through the whole first pass (tens of MB at 10,000).
	if err := s.Client.List(ctx, list, client.UnsafeDisableDeepCopy); err != nil {
		return err
	}
	failed := s.syncAll(ctx, list.Items)
	auditErr := s.audit(ctx)
	if auditErr != nil {
		log.Error(auditErr, "First audit failed; will retry", "period", s.AuditPeriod)
	}
	if failed > 0 || auditErr != nil {
		// Some Service's programming may not have reached the kernel (the first audit of a cold start
		// finishes every Service's): each one's own reconcile must sync it, retrying until it works.
		s.Services.passed.clear()
	}
	s.synced.Store(true)
	// The controller's reconciles wait until now: while the start-up pass runs, each of them would sync a
	// Service the pass syncs too (every Service is queued once the caches fill), which at 10,000 Services
	// doubled the Services' syncs before the node was ready. Changes made meanwhile are queued, and
	// reconciled from here on; a queued reconcile whose Service did not change returns at once
	// (ServiceReconciler.skipUnchanged).
	close(s.gate)
	log.Info("First full sync done", "services", len(list.Items), "failed", failed, "duration", time.Since(t0))
	s.takeoverLeftovers(ctx)

	s.runPeriodic(ctx)
	return nil
}

// syncAll syncs every listed Service once, Workers at a time, and returns how many failed. A Service that
// cannot be evaluated is held by its ClusterIPs, so the first audit never sweeps it; one that fails is
// retried by the controller, since one bad Service must not keep the node unready.
func (s *Startup) syncAll(ctx context.Context, svcs []corev1.Service) int {
	var failed atomic.Int64
	var wg sync.WaitGroup
	next := make(chan int)
	for range max(s.Workers, 1) {
		wg.Go(func() {
			for i := range next {
				if _, err := s.Services.syncService(ctx, client.ObjectKeyFromObject(&svcs[i]), &svcs[i], true); err != nil {
					failed.Add(1)
				}
			}
		})
	}
	for i := range svcs {
		next <- i
	}
	close(next)
	wg.Wait()
	return int(failed.Load())
}

// runPeriodic runs, until ctx ends, the drift canary every DriftCheckPeriod and the audit every AuditPeriod,
// the first one AuditPeriod after the start-up pass's own.
// They run apart because an audit at scale takes seconds and the canary must notice a flush within its own
// period; the engine runs one audit at a time, and a resync after drift preempts a periodic audit.
func (s *Startup) runPeriodic(ctx context.Context) {
	log := logf.FromContext(ctx).WithName("startup")
	if s.DriftCheckPeriod > 0 {
		go wait.UntilWithContext(ctx, s.checkDrift, s.DriftCheckPeriod)
	}
	// The start-up pass has just audited: the first periodic audit is one period later, not at once (at
	// 10,000 Services a second audit right after the first cost 5-11 CPU seconds, in the flips and the idle
	// time that follow a cold start).
	select {
	case <-ctx.Done():
		return
	case <-time.After(s.AuditPeriod):
	}
	wait.UntilWithContext(ctx, func(ctx context.Context) {
		if err := s.audit(ctx); errors.Is(err, syncer.ErrAuditPreempted) {
			log.V(1).Info("Audit preempted by a resync after drift")
		} else if err != nil {
			log.Error(err, "Audit failed")
		} else {
			s.takeoverLeftovers(ctx)
		}
	}, s.AuditPeriod)
}

// checkDrift runs the canary once and, if the kernel lost the agent's state, re-syncs everything at once.
func (s *Startup) checkDrift(ctx context.Context) {
	log := logf.FromContext(ctx).WithName("drift")
	d, err := s.Engine.CheckDrift(ctx)
	if err != nil {
		log.Error(err, "Drift check failed")
		return
	}
	if d == syncer.NoDrift {
		return
	}
	log.Info("The kernel lost the agent's state; re-syncing every Service", "lost", d)
	if err := s.timed(ctx, s.Engine.Resync); err != nil {
		log.Error(err, "Re-sync after drift failed; the next check or audit retries", "lost", d)
		return
	}
	log.Info("Re-synced after drift", "lost", d)
}

func (s *Startup) audit(ctx context.Context) error { return s.timed(ctx, s.Engine.Audit) }

// timed runs an audit (periodic, or the resync after drift) and observes its duration.
func (s *Startup) timed(ctx context.Context, run func(context.Context) error) error {
	t0 := time.Now()
	defer func() { metricAuditDuration.Observe(time.Since(t0).Seconds()) }()
	return run(ctx)
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
