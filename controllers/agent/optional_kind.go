package agent

import (
	"context"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/workqueue"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"
)

// DefaultCRDPollInterval is how often a watch on a CRD that is not installed looks for it again.
const DefaultCRDPollInterval = 10 * time.Second

// optionalKind is a watch on a kind served by a CRD that may not be installed (yet, or any more). Without
// the CRD, controller-runtime's Kind source never syncs and the controller, then the whole manager, fails
// after its cache-sync timeout: the agent would crash-loop, and its restarts would each re-adopt the kernel.
// optionalKind instead reports synced at once (no CRD, no objects), keeps looking for the CRD, and starts
// the real watch when it appears (whose initial list then enqueues what the new objects govern).
type optionalKind struct {
	mapper meta.RESTMapper
	gk     schema.GroupKind
	inner  source.SyncingSource
	poll   time.Duration

	started atomic.Bool
}

var _ source.SyncingSource = (*optionalKind)(nil)

func (o *optionalKind) installed() bool {
	_, err := o.mapper.RESTMapping(o.gk)
	return err == nil
}

// Start implements source.Source.
func (o *optionalKind) Start(ctx context.Context, queue workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
	if o.installed() {
		o.started.Store(true)
		return o.inner.Start(ctx, queue)
	}
	log := logf.FromContext(ctx).WithValues("kind", o.gk.String())
	log.Info("The CRD is not installed: until it is, no object of this kind exists and every Service gets the "+
		"agent's defaults; looking for it again periodically", "interval", o.poll)
	go func() {
		_ = wait.PollUntilContextCancel(ctx, o.poll, false, func(ctx context.Context) (bool, error) {
			if !o.installed() {
				return false, nil
			}
			if err := o.inner.Start(ctx, queue); err != nil {
				log.Error(err, "Starting the watch of a newly installed CRD")
				return false, nil
			}
			o.started.Store(true)
			log.Info("The CRD is installed now: watching it")
			if err := o.inner.WaitForSync(ctx); err != nil {
				log.Error(err, "Waiting for the watch of a newly installed CRD to sync")
			}
			return true, nil
		})
	}()
	return nil
}

// WaitForSync implements source.SyncingSource: without the CRD there is nothing to wait for.
func (o *optionalKind) WaitForSync(ctx context.Context) error {
	if !o.started.Load() {
		return nil
	}
	return o.inner.WaitForSync(ctx)
}

func (o *optionalKind) String() string { return "optional kind source: " + o.gk.String() }
