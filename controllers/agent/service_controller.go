package agent

import (
	"context"
	"net/netip"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	lbv1alpha1 "github.com/ipvs-operator/ipvs-operator/api/v1alpha1"
	"github.com/ipvs-operator/ipvs-operator/controllers/agent/desired"
	"github.com/ipvs-operator/ipvs-operator/controllers/policy"
)

// The agent only reads the cluster; per-node results go to metrics, logs and Events, never to a status that
// every node would fight over.
// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups=discovery.k8s.io,resources=endpointslices,verbs=get;list;watch
// +kubebuilder:rbac:groups=lb.ipvs-operator.dev,resources=servicepolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// ServiceReconciler programs one Service at a time into this node's IPVS table.
type ServiceReconciler struct {
	client.Client
	Engine   Engine
	Options  desired.Options
	Recorder events.EventRecorder
	Clock    clock.PassiveClock
	// Gate is closed once the engine has adopted the kernel's state; until then reconciles wait, so the
	// first programming never races the adoption of what a previous agent left.
	Gate <-chan struct{}
}

// Reconcile computes the Service's desired state on this node and programs it.
func (r *ServiceReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	select {
	case <-r.Gate:
	case <-ctx.Done():
		return ctrl.Result{}, ctx.Err()
	}
	requeue, err := r.sync(ctx, req.NamespacedName)
	return ctrl.Result{RequeueAfter: requeue}, err
}

// sync is Reconcile without the gate: the start-up pass calls it directly.
func (r *ServiceReconciler) sync(ctx context.Context, key types.NamespacedName) (time.Duration, error) {
	log := logf.FromContext(ctx).WithValues("service", key)
	start := r.Clock.Now()
	defer func() { metricSyncDuration.Observe(r.Clock.Since(start).Seconds()) }()

	svc := &corev1.Service{}
	if err := r.Get(ctx, key, svc); err != nil {
		if !apierrors.IsNotFound(err) {
			return 0, err
		}
		svc = nil // deleted: its state is removed below
	}

	var (
		state  desired.State
		slices []*discoveryv1.EndpointSlice
	)
	if svc != nil && desired.InScope(svc, r.Options.ManageAll) {
		var err error
		if slices, err = r.endpointSlices(ctx, key); err != nil {
			return 0, err
		}
		pol, err := r.policy(ctx, svc)
		if err != nil {
			return 0, err
		}
		state, err = desired.ForService(svc, slices, pol, r.Options)
		if err != nil {
			// Bad input in one Service: keep whatever its data path already is, tell the user on the
			// Service, and don't retry until the object changes.
			log.Error(err, "Service cannot be programmed; keeping its current kernel state")
			r.Recorder.Eventf(svc, nil, corev1.EventTypeWarning, "InvalidService", "Program",
				"node %s: %v", r.Options.NodeName, err)
			if _, rerr := r.Engine.Retain(ctx, key.String(), clusterIPs(svc)); rerr != nil {
				return 0, rerr
			}
			return 0, reconcile.TerminalError(err)
		}
	}

	res, err := r.Engine.SyncService(ctx, key.String(), state)
	if err != nil {
		metricSyncErrors.Inc()
		if svc != nil {
			r.Recorder.Eventf(svc, nil, corev1.EventTypeWarning, "ProgrammingFailed", "Program",
				"node %s: %v", r.Options.NodeName, err)
		}
		return 0, err
	}
	if res.Ops > 0 {
		log.V(1).Info("Programmed Service", "kernelOps", res.Ops)
		observeProgrammingLatency(r.Clock.Now(), slices)
	}
	return res.RequeueAfter, nil
}

func (r *ServiceReconciler) endpointSlices(ctx context.Context, key types.NamespacedName) ([]*discoveryv1.EndpointSlice, error) {
	list := &discoveryv1.EndpointSliceList{}
	if err := r.List(ctx, list, client.InNamespace(key.Namespace), client.MatchingFields{serviceNameField: key.Name}); err != nil {
		return nil, err
	}
	slices := make([]*discoveryv1.EndpointSlice, len(list.Items))
	for i := range list.Items {
		slices[i] = &list.Items[i]
	}
	return slices, nil
}

// policy returns the governing ServicePolicy's settings, or nil for the agent's defaults.
func (r *ServiceReconciler) policy(ctx context.Context, svc *corev1.Service) (*desired.Policy, error) {
	list := &lbv1alpha1.ServicePolicyList{}
	if err := r.List(ctx, list, client.InNamespace(svc.Namespace)); err != nil {
		return nil, err
	}
	p := policy.Governing(list.Items, svc)
	if p == nil {
		return nil, nil
	}
	return &desired.Policy{
		Scheduler:    string(p.Spec.SchedulerOrDefault()),
		DrainTimeout: time.Duration(p.Spec.DrainTimeoutSeconds()) * time.Second,
	}, nil
}

// SetupWithManager watches Services, their EndpointSlices and the namespace's ServicePolicies.
func (r *ServiceReconciler) SetupWithManager(mgr ctrl.Manager, workers int) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("service").
		// Labels decide scope and policy selection but do not bump the generation.
		For(&corev1.Service{}, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicate.LabelChangedPredicate{}))).
		Watches(&discoveryv1.EndpointSlice{}, handler.EnqueueRequestsFromMapFunc(sliceToService)).
		Watches(&lbv1alpha1.ServicePolicy{}, handler.EnqueueRequestsFromMapFunc(r.policyToServices),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		WithOptions(controller.Options{MaxConcurrentReconciles: workers}).
		Complete(r)
}

func sliceToService(_ context.Context, o client.Object) []reconcile.Request {
	name := o.GetLabels()[discoveryv1.LabelServiceName]
	if name == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: name}}}
}

// policyToServices enqueues every Service of the policy's namespace: a selector change can both add and drop
// Services, and a Service dropped by one policy may fall to another, so the namespace is the honest scope.
// Policies change rarely, and a Service whose state did not change costs no kernel operation.
func (r *ServiceReconciler) policyToServices(ctx context.Context, o client.Object) []reconcile.Request {
	list := &corev1.ServiceList{}
	if err := r.List(ctx, list, client.InNamespace(o.GetNamespace())); err != nil {
		logf.FromContext(ctx).Error(err, "Listing Services for a ServicePolicy change", "policy", client.ObjectKeyFromObject(o))
		return nil
	}
	reqs := make([]reconcile.Request, len(list.Items))
	for i := range list.Items {
		reqs[i] = reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])}
	}
	return reqs
}

// clusterIPs are the Service's parsable ClusterIPs: what a Service that cannot be translated still owns.
func clusterIPs(svc *corev1.Service) []netip.Addr {
	var out []netip.Addr
	for _, s := range append([]string{svc.Spec.ClusterIP}, svc.Spec.ClusterIPs...) {
		if a, err := netip.ParseAddr(s); err == nil && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}
