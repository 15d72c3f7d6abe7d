package agent

import (
	"context"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// PodCIDRReconciler keeps the data-path rules' idea of "pod sources" equal to this Node's pod CIDRs
// (--detect-local-mode=NodeCIDR, kube-proxy's meaning: only this node's pods reach this node's IPVS with a
// ClusterIP destination, so other nodes' ranges are not let through the guard), and says through
// Detection, with a Warning Event on the Node, when there are none.
type PodCIDRReconciler struct {
	client.Client
	Engine   Engine
	NodeName string
	// Detection receives whether pods can be told apart; nil records nothing.
	Detection *PodDetection
	// Recorder emits the Warning Event on the Node; nil emits none.
	Recorder events.EventRecorder
}

// Reconcile hands this Node's pod CIDRs to the engine.
func (r *PodCIDRReconciler) Reconcile(ctx context.Context, _ ctrl.Request) (ctrl.Result, error) {
	cidrs, err := r.PodCIDRs(ctx)
	if err != nil {
		return ctrl.Result{}, err
	}
	logf.FromContext(ctx).V(1).Info("Pod CIDRs", "cidrs", cidrs)
	return ctrl.Result{}, r.Engine.SetPodCIDRs(ctx, cidrs)
}

// PodCIDRs reads this Node's pod CIDRs and records whether there are any. The start-up asks it before the
// kernel is adopted, so the guard knows the pods from the first rule it programs.
func (r *PodCIDRReconciler) PodCIDRs(ctx context.Context) ([]netip.Prefix, error) {
	node := &corev1.Node{}
	err := r.Get(ctx, client.ObjectKey{Name: r.NodeName}, node)
	if apierrors.IsNotFound(err) {
		r.record(ctx, nil, noPodCIDRsError(r.NodeName, "has no Node object"))
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	cidrs := PodCIDRs([]corev1.Node{*node})
	if len(cidrs) == 0 {
		r.record(ctx, node, noPodCIDRsError(r.NodeName, "has no spec.podCIDRs"))
	} else {
		r.record(ctx, node, nil)
	}
	return cidrs, nil
}

// record sets the detection state and, when it turns to a new failure, says so on the Node.
func (r *PodCIDRReconciler) record(ctx context.Context, node *corev1.Node, err error) {
	if r.Detection == nil || !r.Detection.Set(err) {
		return
	}
	logf.FromContext(ctx).Error(err, "Pods reaching ClusterIPs are refused; the agent reports not ready")
	if r.Recorder != nil && node != nil {
		r.Recorder.Eventf(node, nil, corev1.EventTypeWarning, "PodCIDRsMissing", "DetectLocal", "%s", err.Error())
	}
}

// PodCIDRs returns the sorted, de-duplicated pod CIDRs of the nodes; unparsable ones are skipped.
func PodCIDRs(nodes []corev1.Node) []netip.Prefix {
	var out []netip.Prefix
	for _, n := range nodes {
		cidrs := n.Spec.PodCIDRs
		if len(cidrs) == 0 && n.Spec.PodCIDR != "" {
			cidrs = []string{n.Spec.PodCIDR}
		}
		for _, c := range cidrs {
			if p, err := netip.ParsePrefix(c); err == nil {
				out = append(out, p.Masked())
			}
		}
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return slices.Compact(out)
}

// SetupWithManager watches this Node, when it appears, goes or its pod CIDRs change.
func (r *PodCIDRReconciler) SetupWithManager(mgr ctrl.Manager) error {
	thisNode := predicate.NewPredicateFuncs(func(o client.Object) bool { return o.GetName() == r.NodeName })
	podCIDRChanged := predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		o, n := e.ObjectOld.(*corev1.Node), e.ObjectNew.(*corev1.Node)
		return o.Spec.PodCIDR != n.Spec.PodCIDR || !slices.Equal(o.Spec.PodCIDRs, n.Spec.PodCIDRs)
	}}
	return ctrl.NewControllerManagedBy(mgr).
		Named("podcidrs").
		Watches(&corev1.Node{}, handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
			return []reconcile.Request{{NamespacedName: client.ObjectKey{Name: r.NodeName}}}
		}), builder.WithPredicates(thisNode, podCIDRChanged)).
		Complete(r)
}
