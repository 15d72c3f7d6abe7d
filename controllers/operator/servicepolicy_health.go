package operator

import (
	"context"
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/ipvs-operator/ipvs-operator/api/v1alpha1"
)

// The operator reads the agents' per-node health check reports to sum them into the Degraded condition.
// +kubebuilder:rbac:groups=lb.ipvs-operator.dev,resources=healthcheckstatuses,verbs=get;list;watch

// healthReports lists the nodes' HealthCheckStatus reports on policy p.
func (r *ServicePolicyReconciler) healthReports(ctx context.Context, p *v1alpha1.ServicePolicy) ([]v1alpha1.HealthCheckStatus, error) {
	if p.Spec.HealthCheck == nil {
		return nil, nil
	}
	var list v1alpha1.HealthCheckStatusList
	if err := r.List(ctx, &list, client.InNamespace(p.Namespace), client.MatchingLabels{v1alpha1.HealthCheckStatusPolicyLabel: p.Name}); err != nil {
		if meta.IsNoMatchError(err) {
			return nil, nil // an install without the reports' CRD: nothing to sum
		}
		return nil, fmt.Errorf("listing HealthCheckStatuses: %w", err)
	}
	return list.Items, nil
}

// setDegraded sets the Degraded condition of a policy with a health check from the nodes' reports, and
// removes it from a policy without one.
func setDegraded(status *v1alpha1.ServicePolicyStatus, p *v1alpha1.ServicePolicy, reports []v1alpha1.HealthCheckStatus) {
	if p.Spec.HealthCheck == nil {
		meta.RemoveStatusCondition(&status.Conditions, v1alpha1.ConditionDegraded)
		return
	}
	var out int32
	nodes, outNodes, panicNodes := sets.New[string](), sets.New[string](), sets.New[string]()
	panicking := sets.New[string]()
	for _, rep := range reports {
		if rep.Report.Policy != p.Name {
			continue
		}
		nodes.Insert(rep.Report.Node)
		out += rep.Report.TakenOutCount
		if rep.Report.TakenOutCount > 0 {
			outNodes.Insert(rep.Report.Node)
		}
		if len(rep.Report.PanicServices) > 0 {
			panicNodes.Insert(rep.Report.Node)
			panicking.Insert(rep.Report.PanicServices...)
		}
	}
	c := metav1.Condition{Type: v1alpha1.ConditionDegraded, ObservedGeneration: p.Generation}
	see := fmt.Sprintf(" (kubectl get hcstatus -n %s -l %s=%s)", p.Namespace, v1alpha1.HealthCheckStatusPolicyLabel, p.Name)
	var parts []string
	if panicking.Len() > 0 {
		parts = append(parts, fmt.Sprintf("every endpoint of %s fails its health check on %s, which serve them anyway (panic mode)",
			listNames(sets.List(panicking)), countNodes(panicNodes.Len())))
	}
	if out > 0 {
		parts = append(parts, fmt.Sprintf("%d real servers are out of rotation on %s", out, countNodes(outNodes.Len())))
	}
	switch {
	case panicking.Len() > 0:
		c.Status, c.Reason = metav1.ConditionTrue, v1alpha1.ReasonHealthPanic
	case out > 0:
		c.Status, c.Reason = metav1.ConditionTrue, v1alpha1.ReasonTakenOut
	default:
		c.Status, c.Reason = metav1.ConditionFalse, v1alpha1.ReasonHealthy
		c.Message = "No node reports an endpoint failing the health check"
	}
	if len(parts) > 0 {
		msg := strings.Join(parts, "; ")
		c.Message = strings.ToUpper(msg[:1]) + msg[1:] + see
	}
	meta.SetStatusCondition(&status.Conditions, c)
}

func countNodes(n int) string {
	if n == 1 {
		return "1 node"
	}
	return fmt.Sprintf("%d nodes", n)
}

// reportToPolicy maps a node's report to the policy it is about.
func reportToPolicy(_ context.Context, o client.Object) []reconcile.Request {
	name := o.GetLabels()[v1alpha1.HealthCheckStatusPolicyLabel]
	if name == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: name}}}
}
