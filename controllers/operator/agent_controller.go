package operator

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"
)

// FieldOwner is the operator's field manager for server-side apply.
const FieldOwner = "ipvs-operator"

// The DaemonSet lives in the operator's namespace only, so its permissions are a Role there (controller-gen
// emits a Role for markers with a namespace). Least privilege: server-side apply needs patch, plus create
// when the object does not exist yet; the operator never updates or deletes it.
// +kubebuilder:rbac:groups=apps,namespace=ipvs-operator-system,resources=daemonsets,verbs=get;list;watch;create;patch

// AgentDaemonSetReconciler keeps the agent DaemonSet as RenderAgentDaemonSet says it should be: it applies the
// rendered object at start, and again whenever someone edits or deletes it. It applies with server-side apply
// and forced ownership, so every field the operator renders is restored after a manual edit, while fields it
// does not render (set by other tools, or defaulted by the API server) are left alone.
type AgentDaemonSetReconciler struct {
	client.Client
	// Config must be defaulted and valid (AgentConfig.WithDefaults, Validate).
	Config AgentConfig
}

// Reconcile applies the rendered agent DaemonSet.
func (r *AgentDaemonSetReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	logger := log.FromContext(ctx)

	desired, err := agentApplyConfiguration(RenderAgentDaemonSet(r.Config))
	if err != nil {
		// A rendering bug, not something a retry fixes.
		return ctrl.Result{}, reconcile.TerminalError(err)
	}
	if err := r.Apply(ctx, desired, client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
		return ctrl.Result{}, fmt.Errorf("applying agent DaemonSet %s: %w", req.NamespacedName, err)
	}
	logger.V(1).Info("Applied agent DaemonSet")
	return ctrl.Result{}, nil
}

// agentApplyConfiguration turns the rendered DaemonSet into an apply configuration holding only the fields the
// operator sets: status is dropped (a typed object always carries one, and applying it would claim ownership
// of zeroed status fields).
func agentApplyConfiguration(ds *appsv1.DaemonSet) (runtime.ApplyConfiguration, error) {
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(ds)
	if err != nil {
		return nil, fmt.Errorf("converting the agent DaemonSet: %w", err)
	}
	delete(u, "status")
	return client.ApplyConfigurationFromUnstructured(&unstructured.Unstructured{Object: u}), nil
}

// SetupWithManager registers the reconciler. The manager's cache must be allowed to watch DaemonSets in
// r.Config.Namespace (the operator's RBAC covers no other namespace).
func (r *AgentDaemonSetReconciler) SetupWithManager(mgr ctrl.Manager) error {
	key := types.NamespacedName{Namespace: r.Config.Namespace, Name: AgentName}
	isAgent := predicate.NewPredicateFuncs(func(o client.Object) bool {
		return o.GetNamespace() == key.Namespace && o.GetName() == key.Name
	})
	// Creation of the DaemonSet needs a first event even when it does not exist yet: enqueue it once at start.
	atStart := source.Func(func(_ context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
		q.Add(reconcile.Request{NamespacedName: key})
		return nil
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("agent-daemonset").
		// Spec, label and annotation changes (someone's edit) and deletion; not the status updates that the
		// DaemonSet controller makes as pods come and go.
		For(&appsv1.DaemonSet{}, builder.WithPredicates(isAgent, predicate.Or(
			predicate.GenerationChangedPredicate{}, predicate.LabelChangedPredicate{}, predicate.AnnotationChangedPredicate{},
		))).
		WatchesRawSource(atStart).
		Complete(r)
}
