package agent

import (
	"context"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// PodCIDRReconciler keeps the data-path rules' idea of "pod sources" equal to the pod CIDRs of every Node.
// It is used when the cluster CIDRs are not given by flag.
type PodCIDRReconciler struct {
	client.Client
	Engine Engine
}

// allNodes is the one request every Node event maps to: the answer depends on all Nodes at once.
var allNodes = reconcile.Request{}

// Reconcile collects every Node's pod CIDRs and hands them to the engine.
func (r *PodCIDRReconciler) Reconcile(ctx context.Context, _ ctrl.Request) (ctrl.Result, error) {
	cidrs, err := ListPodCIDRs(ctx, r)
	if err != nil {
		return ctrl.Result{}, err
	}
	logf.FromContext(ctx).V(1).Info("Pod CIDRs", "cidrs", cidrs)
	return ctrl.Result{}, r.Engine.SetPodCIDRs(ctx, cidrs)
}

// ListPodCIDRs returns the pod CIDRs of every Node.
func ListPodCIDRs(ctx context.Context, c client.Reader) ([]netip.Prefix, error) {
	nodes := &corev1.NodeList{}
	if err := c.List(ctx, nodes); err != nil {
		return nil, err
	}
	return PodCIDRs(nodes.Items), nil
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

// SetupWithManager watches Nodes whose pod CIDRs change.
func (r *PodCIDRReconciler) SetupWithManager(mgr ctrl.Manager) error {
	podCIDRChanged := predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		o, n := e.ObjectOld.(*corev1.Node), e.ObjectNew.(*corev1.Node)
		return o.Spec.PodCIDR != n.Spec.PodCIDR || !slices.Equal(o.Spec.PodCIDRs, n.Spec.PodCIDRs)
	}}
	return ctrl.NewControllerManagedBy(mgr).
		Named("podcidrs").
		Watches(&corev1.Node{}, handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
			return []reconcile.Request{allNodes}
		}), builder.WithPredicates(podCIDRChanged)).
		Complete(r)
}
