package operator

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/ipvs-operator/ipvs-operator/api/policy"
	"github.com/ipvs-operator/ipvs-operator/api/v1alpha1"
)

// Reasons and actions of the events the operator records on ServicePolicies.
const (
	// EventReasonServicesApplied: the policy started to govern some Services.
	EventReasonServicesApplied = "ServicesApplied"
	// EventReasonServicesReleased: the policy stopped governing some Services (deleted, relabelled, taken by
	// an older policy, or no longer selected).
	EventReasonServicesReleased = "ServicesReleased"

	eventActionApply   = "Apply"
	eventActionRelease = "Release"
	eventActionResolve = "Resolve"
)

// The operator is the only writer of ServicePolicy status, in every namespace. Events are recorded on the
// policies (events.k8s.io for the controller's events, core for leader election's).
// Status is only ever merge-patched, so there is no update verb.
// +kubebuilder:rbac:groups=lb.ipvs-operator.dev,resources=servicepolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups=lb.ipvs-operator.dev,resources=servicepolicies/status,verbs=get;patch
// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch

// ServicePolicyReconciler writes the status of ServicePolicies: the Services each one governs, and its Ready
// and Conflicted conditions. Which policy governs which Service is decided by api/policy, the same
// code the agent uses to program the kernel.
type ServicePolicyReconciler struct {
	client.Client
	// Recorder records events on policies; use the manager's GetEventRecorder.
	Recorder events.EventRecorder
}

// Reconcile recomputes one policy's status from every policy and Service of its namespace.
func (r *ServicePolicyReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	logger := log.FromContext(ctx)

	var p v1alpha1.ServicePolicy
	if err := r.Get(ctx, req.NamespacedName, &p); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}

	var policies v1alpha1.ServicePolicyList
	if err := r.List(ctx, &policies, client.InNamespace(req.Namespace)); err != nil {
		return ctrl.Result{}, fmt.Errorf("listing ServicePolicies: %w", err)
	}
	var services corev1.ServiceList
	if err := r.List(ctx, &services, client.InNamespace(req.Namespace)); err != nil {
		return ctrl.Result{}, fmt.Errorf("listing Services: %w", err)
	}
	// The policy just read is the authority on itself, even if the list came from a slightly different
	// moment of the cache.
	replaced := false
	for i := range policies.Items {
		if policies.Items[i].Name == p.Name {
			policies.Items[i], replaced = p, true
		}
	}
	if !replaced {
		policies.Items = append(policies.Items, p)
	}
	result := policy.Resolve(policies.Items, services.Items).Policies[req.NamespacedName]

	status := desiredStatus(&p, result)
	reports, err := r.healthReports(ctx, &p)
	if err != nil {
		return ctrl.Result{}, err
	}
	setDegraded(&status, &p, reports)
	if equality.Semantic.DeepEqual(p.Status, status) {
		return ctrl.Result{}, nil
	}

	before := p.DeepCopy()
	p.Status = status
	// A merge patch, not an update: the operator is the only writer of status and computes all of it, so it
	// needs no optimistic lock, and a stale cache is corrected by the event that made it stale.
	if err := r.Status().Patch(ctx, &p, client.MergeFrom(before)); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	logger.Info("Updated ServicePolicy status", "services", status.ServiceCount,
		"ready", conditionStatus(status.Conditions, v1alpha1.ConditionReady),
		"conflicted", conditionStatus(status.Conditions, v1alpha1.ConditionConflicted))

	// Events only after the status is stored: the stored status is what the next reconcile compares with, so
	// each transition is reported once.
	r.recordTransitions(before, &p)
	return ctrl.Result{}, nil
}

// recordTransitions records events for what changed between the stored status and the new one.
func (r *ServicePolicyReconciler) recordTransitions(before, after *v1alpha1.ServicePolicy) {
	if r.Recorder == nil {
		return
	}
	oldServices, newServices := sets.New(before.Status.Services...), sets.New(after.Status.Services...)
	if added := sets.List(newServices.Difference(oldServices)); len(added) > 0 {
		r.Recorder.Eventf(after, nil, corev1.EventTypeNormal, EventReasonServicesApplied, eventActionApply,
			"Now applies to %s: %s", countServices(len(added)), listNames(added))
	}
	if removed := sets.List(oldServices.Difference(newServices)); len(removed) > 0 {
		r.Recorder.Eventf(after, nil, corev1.EventTypeNormal, EventReasonServicesReleased, eventActionRelease,
			"No longer applies to %s: %s", countServices(len(removed)), listNames(removed))
	}
	if c := became(before, after, v1alpha1.ConditionConflicted, metav1.ConditionTrue, v1alpha1.ReasonConflict); c != nil {
		r.Recorder.Eventf(after, nil, corev1.EventTypeWarning, c.Reason, eventActionResolve, "%s", c.Message)
	}
	if c := became(before, after, v1alpha1.ConditionDegraded, metav1.ConditionTrue, v1alpha1.ReasonHealthPanic); c != nil {
		r.Recorder.Eventf(after, nil, corev1.EventTypeWarning, c.Reason, eventActionResolve, "%s", c.Message)
	}
	for _, reason := range []string{v1alpha1.ReasonInvalidSelector, v1alpha1.ReasonInvalidSpec} {
		if c := became(before, after, v1alpha1.ConditionReady, metav1.ConditionFalse, reason); c != nil {
			r.Recorder.Eventf(after, nil, corev1.EventTypeWarning, c.Reason, eventActionResolve, "%s", c.Message)
		}
	}
}

// became returns after's condition of type t if it has the given status and reason and before's did not.
func became(before, after *v1alpha1.ServicePolicy, t string, status metav1.ConditionStatus, reason string) *metav1.Condition {
	c := meta.FindStatusCondition(after.Status.Conditions, t)
	if c == nil || c.Status != status || c.Reason != reason {
		return nil
	}
	if old := meta.FindStatusCondition(before.Status.Conditions, t); old != nil && old.Status == status && old.Reason == reason {
		return nil
	}
	return c
}

func conditionStatus(conditions []metav1.Condition, t string) metav1.ConditionStatus {
	if c := meta.FindStatusCondition(conditions, t); c != nil {
		return c.Status
	}
	return metav1.ConditionUnknown
}

// SetupWithManager registers the reconciler with the manager.
func (r *ServicePolicyReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("servicepolicy").
		// The policy itself, on any change (including someone else's edit of its status, which is undone).
		For(&v1alpha1.ServicePolicy{}).
		// A policy created, deleted, or with a new spec can change what its neighbours govern; status
		// updates cannot, so they do not fan out.
		Watches(&v1alpha1.ServicePolicy{}, handler.EnqueueRequestsFromMapFunc(r.policiesOfNamespace),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		// A Service created, deleted or relabelled can change what every policy of its namespace governs.
		Watches(&corev1.Service{}, handler.EnqueueRequestsFromMapFunc(r.policiesOfNamespace),
			builder.WithPredicates(predicate.LabelChangedPredicate{})).
		// A node's health check report: the policy's Degraded condition sums them.
		Watches(&v1alpha1.HealthCheckStatus{}, handler.EnqueueRequestsFromMapFunc(reportToPolicy)).
		Complete(r)
}

// policiesOfNamespace maps an object to every ServicePolicy of its namespace.
func (r *ServicePolicyReconciler) policiesOfNamespace(ctx context.Context, obj client.Object) []reconcile.Request {
	var policies v1alpha1.ServicePolicyList
	if err := r.List(ctx, &policies, client.InNamespace(obj.GetNamespace())); err != nil {
		log.FromContext(ctx).Error(err, "Listing ServicePolicies to enqueue", "namespace", obj.GetNamespace())
		return nil
	}
	requests := make([]reconcile.Request, 0, len(policies.Items))
	for _, p := range policies.Items {
		requests = append(requests, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&p)})
	}
	return requests
}
