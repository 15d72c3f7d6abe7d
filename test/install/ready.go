package install

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Observed is one look at everything an install's readiness depends on; nil means absent.
type Observed struct {
	CRD       *apiextensionsv1.CustomResourceDefinition
	Operator  *appsv1.Deployment
	Agents    *appsv1.DaemonSet
	AgentPods []corev1.Pod
}

// NotReady says what keeps an install from being ready, or "" when it is. Ready means: the ServicePolicy CRD
// is established; the operator Deployment has rolled out (its controller saw the current generation, every
// replica is updated, none of an older one remains) and is Available; the agent DaemonSet has rolled out the
// same way to exactly the given nodes; and every one of those nodes has a Ready agent pod that is not being
// deleted. It is pure so that its cases are unit-tested; WaitReady polls it against a cluster.
func NotReady(o Observed, nodes []string) string {
	var why []string
	switch {
	case o.CRD == nil:
		why = append(why, "CRD "+ServicePolicyCRD+" absent")
	case !crdConditionTrue(o.CRD, apiextensionsv1.Established):
		why = append(why, "CRD "+ServicePolicyCRD+" not established")
	}
	if msg := deploymentNotReady(o.Operator); msg != "" {
		why = append(why, "operator: "+msg)
	}
	if msg := daemonSetNotReady(o.Agents, len(nodes)); msg != "" {
		why = append(why, "agent DaemonSet: "+msg)
	}
	ready := map[string]bool{}
	for i := range o.AgentPods {
		p := &o.AgentPods[i]
		if p.DeletionTimestamp == nil && podReady(p) {
			ready[p.Spec.NodeName] = true
		}
	}
	var missing []string
	for _, n := range nodes {
		if !ready[n] {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		why = append(why, fmt.Sprintf("no Ready agent on %s", strings.Join(missing, ", ")))
	}
	return strings.Join(why, "; ")
}

func deploymentNotReady(d *appsv1.Deployment) string {
	if d == nil {
		return "Deployment " + OperatorDeployment + " absent"
	}
	want, s := ptr.Deref(d.Spec.Replicas, 1), d.Status
	switch {
	case s.ObservedGeneration < d.Generation:
		return fmt.Sprintf("generation %d not observed yet (%d)", d.Generation, s.ObservedGeneration)
	case s.UpdatedReplicas < want:
		return fmt.Sprintf("%d of %d replicas updated", s.UpdatedReplicas, want)
	case s.Replicas > s.UpdatedReplicas:
		return fmt.Sprintf("%d old replicas pending termination", s.Replicas-s.UpdatedReplicas)
	case s.AvailableReplicas < s.UpdatedReplicas:
		return fmt.Sprintf("%d of %d updated replicas available", s.AvailableReplicas, s.UpdatedReplicas)
	}
	for _, c := range s.Conditions {
		if c.Type == appsv1.DeploymentAvailable {
			if c.Status == corev1.ConditionTrue {
				return ""
			}
			return fmt.Sprintf("not Available: %s", c.Message)
		}
	}
	return "no Available condition"
}

func daemonSetNotReady(ds *appsv1.DaemonSet, nodes int) string {
	if ds == nil {
		return "DaemonSet " + AgentDaemonSet + " absent (the operator renders it)"
	}
	s := ds.Status
	switch {
	case s.ObservedGeneration < ds.Generation:
		return fmt.Sprintf("generation %d not observed yet (%d)", ds.Generation, s.ObservedGeneration)
	case int(s.DesiredNumberScheduled) != nodes:
		return fmt.Sprintf("scheduled on %d nodes, want %d", s.DesiredNumberScheduled, nodes)
	case s.UpdatedNumberScheduled < s.DesiredNumberScheduled:
		return fmt.Sprintf("%d of %d agents updated", s.UpdatedNumberScheduled, s.DesiredNumberScheduled)
	case s.NumberAvailable < s.DesiredNumberScheduled:
		return fmt.Sprintf("%d of %d agents available", s.NumberAvailable, s.DesiredNumberScheduled)
	}
	return ""
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func crdConditionTrue(crd *apiextensionsv1.CustomResourceDefinition, t apiextensionsv1.CustomResourceDefinitionConditionType) bool {
	return slices.ContainsFunc(crd.Status.Conditions, func(c apiextensionsv1.CustomResourceDefinitionCondition) bool {
		return c.Type == t && c.Status == apiextensionsv1.ConditionTrue
	})
}

// Observe reads what NotReady looks at. Absent objects are nil, not errors.
func Observe(ctx context.Context, c client.Client) (Observed, error) {
	var o Observed
	crd, err := getCRD(ctx, c, ServicePolicyCRD)
	if err != nil {
		return o, err
	}
	o.CRD = crd
	d := &appsv1.Deployment{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: Namespace, Name: OperatorDeployment}, d); err == nil {
		o.Operator = d
	} else if !apierrors.IsNotFound(err) {
		return o, err
	}
	ds := &appsv1.DaemonSet{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: Namespace, Name: AgentDaemonSet}, ds); err == nil {
		o.Agents = ds
	} else if !apierrors.IsNotFound(err) {
		return o, err
	}
	pods := &corev1.PodList{}
	if err := c.List(ctx, pods, client.InNamespace(Namespace), client.MatchingLabels{agentAppLabel: AgentDaemonSet}); err != nil {
		return o, err
	}
	o.AgentPods = pods.Items
	return o, nil
}

// getCRD reads a CRD as unstructured, so the caller's client needs no apiextensions types in its scheme.
func getCRD(ctx context.Context, c client.Client, name string) (*apiextensionsv1.CustomResourceDefinition, error) {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(apiextensionsv1.SchemeGroupVersion.WithKind("CustomResourceDefinition"))
	if err := c.Get(ctx, client.ObjectKey{Name: name}, u); err != nil {
		return nil, client.IgnoreNotFound(err)
	}
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, crd); err != nil {
		return nil, err
	}
	return crd, nil
}

// crdEstablished is "" when the CRD name is established, else why not.
func crdEstablished(ctx context.Context, c client.Client, name string) (string, error) {
	crd, err := getCRD(ctx, c, name)
	switch {
	case err != nil:
		return "", err
	case crd == nil:
		return "absent", nil
	case !crdConditionTrue(crd, apiextensionsv1.Established):
		return "not established", nil
	}
	return "", nil
}

// WaitReady waits until NotReady says the install on nodes (every node of the cluster) is ready. API errors
// are retried until timeout: the API server may be busy right after an install. The error names what was
// still not ready.
func WaitReady(ctx context.Context, c client.Client, nodes []string, timeout time.Duration) error {
	var last, lastErr string
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		o, err := Observe(ctx, c)
		if err != nil {
			lastErr = err.Error()
			return false, nil //nolint:nilerr // transient: keep polling
		}
		last = NotReady(o, nodes)
		return last == "", nil
	})
	if err != nil {
		if last == "" { // never observed: the API errors are all there is to say
			last = lastErr
		}
		return fmt.Errorf("waiting for the install to be ready (%s): %w", last, err)
	}
	return nil
}
