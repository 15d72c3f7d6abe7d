package agent

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	lbv1alpha1 "github.com/ipvs-operator/ipvs-operator/api/v1alpha1"
)

// The agent writes its own node's HealthCheckStatus reports and nothing else of that kind.
// +kubebuilder:rbac:groups=lb.ipvs-operator.dev,resources=healthcheckstatuses,verbs=get;list;watch;create;update;delete

// DefaultReportInterval is how often, at most, the agent writes the reports of a policy whose Services'
// health changed: a flapping endpoint costs one write per interval, not one per probe.
const DefaultReportInterval = time.Second

// reporter writes, for each policy with something to report on this node, a HealthCheckStatus named
// <policy>.<node>, and deletes it when there is nothing left to report. Writes are coalesced per policy.
type reporter struct {
	c        client.Client
	node     string
	interval time.Duration
	h        *HealthChecker

	mu    sync.Mutex
	dirty sets.Set[types.NamespacedName] // policies
	kick  chan struct{}
}

// ReportTo makes the checker write this node's HealthCheckStatus reports with c, at most once per interval
// per policy (0: DefaultReportInterval). Call before Start.
func (h *HealthChecker) ReportTo(c client.Client, node string, interval time.Duration) {
	if interval <= 0 {
		interval = DefaultReportInterval
	}
	h.report = &reporter{c: c, node: node, interval: interval, h: h, dirty: sets.New[types.NamespacedName](), kick: make(chan struct{}, 1)}
}

// touch marks the policies (of namespace ns; "" for none) whose report may have changed.
func (r *reporter) touch(ns string, policies ...string) {
	r.mu.Lock()
	for _, p := range policies {
		if p != "" {
			r.dirty.Insert(types.NamespacedName{Namespace: ns, Name: p})
		}
	}
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// run writes dirty reports until ctx ends. A write that fails is retried at the next round.
func (r *reporter) run(ctx context.Context) {
	log := logf.FromContext(ctx).WithName("health-report")
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.kick:
		}
		select { // coalesce a burst
		case <-ctx.Done():
			return
		case <-time.After(r.interval):
		}
		r.mu.Lock()
		todo := r.dirty.UnsortedList()
		r.dirty.Clear()
		r.mu.Unlock()
		for _, p := range todo {
			if err := r.write(ctx, p); err != nil {
				log.Error(err, "Writing the node's health check report; retrying", "policy", p)
				r.touch(p.Namespace, p.Name)
			}
		}
	}
}

// report sums what the node's Services governed by policy p have to say.
func (r *reporter) report(p types.NamespacedName) lbv1alpha1.HealthCheckReport {
	rep := lbv1alpha1.HealthCheckReport{Node: r.node, Policy: p.Name}
	r.h.mu.Lock()
	defer r.h.mu.Unlock()
	for key, s := range r.h.state {
		if key.Namespace != p.Namespace || s.policy != p.Name {
			continue
		}
		rep.TakenOutCount += int32(len(s.Taken))
		for _, t := range s.Taken {
			rep.TakenOut = append(rep.TakenOut, lbv1alpha1.TakenOutEndpoint{Service: key.Name, Endpoint: t.Real.String(), Target: t.Target.String()})
		}
		if len(s.Panic) > 0 {
			rep.PanicServices = append(rep.PanicServices, key.Name)
		}
	}
	slices.SortFunc(rep.TakenOut, func(a, b lbv1alpha1.TakenOutEndpoint) int {
		return cmp.Compare(a.Service+" "+a.Endpoint, b.Service+" "+b.Endpoint)
	})
	rep.TakenOut = slices.CompactFunc(rep.TakenOut, func(a, b lbv1alpha1.TakenOutEndpoint) bool { return a == b })
	if len(rep.TakenOut) > lbv1alpha1.MaxHealthCheckStatusEndpoints {
		rep.TakenOut = rep.TakenOut[:lbv1alpha1.MaxHealthCheckStatusEndpoints]
	}
	slices.Sort(rep.PanicServices)
	return rep
}

// write creates, updates or deletes the report of policy p.
func (r *reporter) write(ctx context.Context, p types.NamespacedName) error {
	rep := r.report(p)
	obj := &lbv1alpha1.HealthCheckStatus{ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name + "." + r.node}}
	if rep.TakenOutCount == 0 && len(rep.PanicServices) == 0 {
		return client.IgnoreNotFound(r.c.Delete(ctx, obj))
	}
	node := &corev1.Node{}
	nodeErr := r.c.Get(ctx, client.ObjectKey{Name: r.node}, node)
	_, err := controllerutil.CreateOrUpdate(ctx, r.c, obj, func() error {
		if obj.Labels == nil {
			obj.Labels = map[string]string{}
		}
		obj.Labels[lbv1alpha1.HealthCheckStatusPolicyLabel] = p.Name
		obj.Labels[lbv1alpha1.HealthCheckStatusNodeLabel] = r.node
		obj.Report = rep
		if nodeErr == nil {
			// Owned by the Node: the garbage collector deletes the reports of a node that is gone.
			obj.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID}}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("HealthCheckStatus %s: %w", client.ObjectKeyFromObject(obj), err)
	}
	return nil
}
