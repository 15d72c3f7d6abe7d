package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/ipvs-operator/ipvs-operator/api/policy"
	lbv1alpha1 "github.com/ipvs-operator/ipvs-operator/api/v1alpha1"
	"github.com/ipvs-operator/ipvs-operator/controllers/agent/desired"
	"github.com/ipvs-operator/ipvs-operator/ipvs"
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
	// Gate is closed once the start-up pass is done (the engine adopted the kernel's state, every Service
	// was synced once, the first audit ran); until then reconciles wait, so the first programming never
	// races the adoption of what a previous agent left, nor syncs a Service the pass syncs too.
	Gate <-chan struct{}
	// HeldUnreadyAfter is how long a Service may be held for a dependency error before ReadyCheck fails;
	// 0 means DefaultHeldUnreadyAfter.
	HeldUnreadyAfter time.Duration
	// CRDPollInterval is how often the agent looks for the ServicePolicy CRD when it is not installed;
	// 0 means DefaultCRDPollInterval.
	CRDPollInterval time.Duration
	// Health probes the endpoints of Services whose policy has a health check; nil: no probes (a policy's
	// health check is then ignored).
	Health *HealthChecker
	// Adopted returns the engine's table once it has adopted the kernel's (syncer.Syncer.Programmed), so
	// that slow-start ramps a previous agent began continue where the kernel's weights show them, and
	// endpoints at full weight do not ramp again; nil: a restart starts every Service at full weight.
	Adopted func() []ipvs.VirtualServer

	initOnce sync.Once
	held     *heldServices
	// governors remembers, per Service, the policy that last governed it with its settings, so that a
	// policy that turns invalid leaves its Services balanced as they were (see policy).
	governors *governorMemory
	// slow remembers the ramps of Services with a slow start.
	slow  *slowStarts
	noCRD atomic.Bool
	// policiesWatched says whether the ServicePolicy watch has started (its CRD is installed); nil means
	// always (no optional watch). Until it has, a List of ServicePolicies would make the cache try to start
	// an informer for a kind the API server does not serve, re-reading discovery on every Service's sync.
	policiesWatched func() bool

	// passed remembers, per Service, the inputs the start-up pass synced it from (see skipUnchanged).
	passed passRecords
	// policyEpochs counts, per namespace, the ServicePolicy events that may have changed its Services'
	// policies: a Service whose namespace saw one since the pass is synced again.
	policyEpochs policyEpochs
}

func (r *ServiceReconciler) init() {
	r.initOnce.Do(func() {
		if r.Clock == nil {
			r.Clock = clock.RealClock{}
		}
		r.held = newHeldServices(r.Clock)
		r.governors = &governorMemory{m: map[types.NamespacedName]governor{}}
		r.slow = newSlowStarts(r.Adopted)
		if r.Health != nil {
			r.Options.Health = r.Health
		}
	})
}

func (r *ServiceReconciler) heldServices() *heldServices {
	r.init()
	return r.held
}

// Reconcile computes the Service's desired state on this node and programs it.
func (r *ServiceReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	select {
	case <-r.Gate:
	case <-ctx.Done():
		return ctrl.Result{}, ctx.Err()
	}
	if r.skipUnchanged(ctx, req.NamespacedName) {
		return ctrl.Result{}, nil
	}
	requeue, err := r.sync(ctx, req.NamespacedName)
	return ctrl.Result{RequeueAfter: requeue}, err
}

// sync is Reconcile without the gate.
func (r *ServiceReconciler) sync(ctx context.Context, key types.NamespacedName) (time.Duration, error) {
	svc := &corev1.Service{}
	if err := r.Get(ctx, key, svc); err != nil {
		if !apierrors.IsNotFound(err) {
			return r.hold(ctx, key, nil, HeldDependencyError, fmt.Errorf("reading the Service: %w", err))
		}
		svc = nil // deleted: its state is removed below
	}
	return r.syncService(ctx, key, svc, false)
}

// syncService programs svc (nil: deleted) as fetched by the caller; the start-up pass hands it the Services
// it listed (fromPass), so that a Service it cannot evaluate is still held by its ClusterIPs, and remembers
// what it synced them from.
func (r *ServiceReconciler) syncService(ctx context.Context, key types.NamespacedName, svc *corev1.Service, fromPass bool) (time.Duration, error) {
	r.init()
	start := r.Clock.Now()
	defer func() { metricSyncDuration.Observe(r.Clock.Since(start).Seconds()) }()

	var (
		state    desired.State
		hl       desired.Health
		epSlices []*discoveryv1.EndpointSlice
		ramping  time.Duration // until the next step of a slow-start ramp; 0: none
		governed bool          // a ServicePolicy governs svc
		epoch    uint64
	)
	if fromPass {
		epoch = r.policyEpochs.get(key.Namespace) // before the policies are read
	}
	if svc != nil && desired.InScope(svc, r.Options.ManageAll) {
		var err error
		if epSlices, err = r.endpointSlices(ctx, key); err != nil {
			return r.hold(ctx, key, svc, HeldDependencyError, fmt.Errorf("listing its EndpointSlices: %w", err))
		}
		pol, err := r.policy(ctx, svc)
		switch {
		case errors.Is(err, errPolicyUnknown):
			return r.hold(ctx, key, svc, HeldPolicyUnknown, err)
		case err != nil:
			return r.hold(ctx, key, svc, HeldDependencyError, fmt.Errorf("listing ServicePolicies: %w", err))
		}
		governed = pol != nil
		state, hl, err = desired.Translate(svc, epSlices, pol, r.Options)
		if err != nil {
			// Bad input in one Service: don't retry until the object changes.
			if _, herr := r.hold(ctx, key, svc, HeldInvalidService, err); herr != err { //nolint:errorlint // identity: hold added a Retain error
				return 0, herr
			}
			return 0, reconcile.TerminalError(err)
		}
		if pol != nil && pol.SlowStart > 0 {
			state, ramping = r.slow.apply(key, state, pol.SlowStart, r.Clock.Now())
		} else {
			r.slow.forget(key)
		}
	} else {
		r.slow.forget(key)
		if svc == nil {
			r.governors.forget(key)
		}
	}
	r.held.release(key)
	if r.Health != nil {
		gov, _ := r.governors.get(key)
		r.Health.observe(ctx, key, svc, hl, gov.name, r.Recorder, r.Options.NodeName)
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
		// The values are added here, not with WithValues up front: zap encodes those at once, on every sync
		// (4% of the agent's CPU at 10,000 Services), for a line that is off by default.
		logf.FromContext(ctx).V(1).Info("Programmed Service", "service", key, "kernelOps", res.Ops)
		observeProgrammingLatency(r.Clock.Now(), epSlices)
	}
	requeue := minPositive(res.RequeueAfter, ramping)
	// Only a Service no policy governs (so no health check and no slow start either: its state depends on
	// the Service and its EndpointSlices alone), and that needs no later look.
	if fromPass && svc != nil && !governed && requeue == 0 {
		r.passed.put(key, passRecord{inputs: syncInputs(svc, epSlices), policyEpoch: epoch})
	}
	return requeue, nil
}

// minPositive is the smaller of two durations, ignoring zeros (no timer).
func minPositive(a, b time.Duration) time.Duration {
	if a <= 0 || (b > 0 && b < a) {
		return b
	}
	return a
}

// hold keeps what the kernel has for a Service whose desired state cannot be computed: an error in reading
// its objects or in the translation is never a reason to tear down a data path that works. The Service stays
// claimed (the engine re-applies its last desired state, or, right after a restart, claims what the previous
// agent left on its ClusterIPs), so no sweep removes it. The Service gets one Warning Event per new reason;
// the error is returned so the controller retries it with backoff. svc may be nil (not readable).
func (r *ServiceReconciler) hold(ctx context.Context, key types.NamespacedName, svc *corev1.Service, reason string, cause error) (time.Duration, error) {
	r.init()
	var vips []netip.Addr
	if svc != nil {
		vips = clusterIPs(svc)
	}
	if r.held.hold(key, reason, cause) {
		logf.FromContext(ctx).Error(cause, "Service cannot be evaluated; keeping its current kernel state",
			"service", key, "reason", reason)
		if svc != nil {
			r.Recorder.Eventf(svc, nil, corev1.EventTypeWarning, reason, "Program",
				"node %s keeps this Service's data path as it is: %v", r.Options.NodeName, cause)
		}
	}
	if _, err := r.Engine.Retain(ctx, key.String(), vips); err != nil {
		return 0, errors.Join(cause, err)
	}
	return 0, cause
}

func (r *ServiceReconciler) endpointSlices(ctx context.Context, key types.NamespacedName) ([]*discoveryv1.EndpointSlice, error) {
	list := &discoveryv1.EndpointSliceList{}
	// The translation only reads them: no deep copy of every slice on every sync (7% of a cold start's CPU at
	// 10,000 Services, and as much garbage).
	if err := r.List(ctx, list, client.InNamespace(key.Namespace), client.MatchingFields{serviceNameField: key.Name},
		client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	out := make([]*discoveryv1.EndpointSlice, len(list.Items))
	for i := range list.Items {
		out[i] = &list.Items[i]
	}
	return out, nil
}

// errPolicyUnknown: a ServicePolicy that may govern the Service is invalid, and the agent does not know the
// settings it had (see policy).
var errPolicyUnknown = errors.New("an invalid ServicePolicy may govern this Service")

// policy returns the settings of the policy governing svc, or nil for the agent's defaults.
//
// A policy that turns invalid (its selector cannot be parsed, or a spec the CRD's validation would refuse)
// selects nothing; but switching its Services to another policy or to the defaults would change their
// traffic silently (sh -> rr breaks affinity). So a Service whose governing policy turned invalid keeps that
// policy's last valid settings, remembered here, until the policy is fixed or deleted; the operator's
// condition on the policy says so. After a restart nothing is remembered: a Service that an invalid policy
// may govern is then held as the kernel has it (errPolicyUnknown). A missing CRD means no policy at all.
func (r *ServiceReconciler) policy(ctx context.Context, svc *corev1.Service) (*desired.Policy, error) {
	list := &lbv1alpha1.ServicePolicyList{}
	noCRD := func() {
		if !r.noCRD.Swap(true) {
			logf.FromContext(ctx).Info("The ServicePolicy CRD is not installed: Services get the agent's defaults")
		}
	}
	if r.policiesWatched != nil && !r.policiesWatched() {
		noCRD() // optionalKind polls for the CRD: no policy, without asking the API server
	} else if err := r.List(ctx, list, client.InNamespace(svc.Namespace)); err != nil {
		if !meta.IsNoMatchError(err) {
			return nil, err
		}
		noCRD()
		list.Items = nil
	} else {
		r.noCRD.Store(false)
	}
	key := client.ObjectKeyFromObject(svc)
	winner := policy.Governing(list.Items, svc)

	// Invalid policies that take precedence over the winner, and might select svc.
	prev, remembered := r.governors.get(key)
	for i := range list.Items {
		p := &list.Items[i]
		if p.Namespace != svc.Namespace || (winner != nil && !policy.Older(p, winner)) {
			continue
		}
		perr := policy.Check(p)
		if perr == nil {
			continue
		}
		if remembered && p.UID == prev.uid {
			r.warnOnce(svc, "PolicyInvalid", fmt.Sprintf("ServicePolicy %s is invalid (%v): keeping its last valid settings (scheduler %s)",
				p.Name, perr, prev.settings.Scheduler))
			return &prev.settings, nil
		}
		if sel, serr := policy.Selector(p); serr == nil && !sel.Matches(labels.Set(svc.Labels)) {
			continue // its selector is fine and does not select svc: it never governed it
		}
		if !remembered {
			return nil, fmt.Errorf("%w: %s (%w); fix or delete it", errPolicyUnknown, p.Name, perr)
		}
	}

	if winner == nil {
		r.governors.forget(key)
		return nil, nil
	}
	settings := desired.Policy{
		Scheduler:    string(winner.Spec.SchedulerOrDefault()),
		DrainTimeout: time.Duration(winner.Spec.DrainTimeoutSeconds()) * time.Second,
		HealthCheck:  healthCheckSettings(winner.Spec.HealthCheck),
		SlowStart:    time.Duration(winner.Spec.SlowStartWindow()) * time.Second,
	}
	r.governors.set(key, governor{uid: winner.UID, name: winner.Name, settings: settings})
	return &settings, nil
}

// warnOnce sends a Warning Event on svc when (reason, note) differs from the last one sent for it.
func (r *ServiceReconciler) warnOnce(svc *corev1.Service, reason, note string) {
	if r.governors.noted(client.ObjectKeyFromObject(svc), reason+": "+note) {
		r.Recorder.Eventf(svc, nil, corev1.EventTypeWarning, reason, "Program", "node %s: %s", r.Options.NodeName, note)
	}
}

// governor is the policy that last governed a Service and the settings it had then.
type governor struct {
	uid      types.UID
	name     string
	settings desired.Policy
	note     string // the last Warning sent about it
}

type governorMemory struct {
	mu sync.Mutex
	m  map[types.NamespacedName]governor
}

func (g *governorMemory) get(k types.NamespacedName) (governor, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	v, ok := g.m[k]
	return v, ok
}

func (g *governorMemory) set(k types.NamespacedName, v governor) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.m[k] = v // a valid governor again: the next warning is new
}

func (g *governorMemory) forget(k types.NamespacedName) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.m, k)
}

// noted records note as the last warning about k and reports whether it differs from the previous one.
func (g *governorMemory) noted(k types.NamespacedName, note string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	v := g.m[k]
	if v.note == note {
		return false
	}
	v.note = note
	g.m[k] = v
	return true
}

// SetupWithManager watches Services, their EndpointSlices and the namespace's ServicePolicies (whose CRD may
// be missing: see optionalKind).
func (r *ServiceReconciler) SetupWithManager(mgr ctrl.Manager, workers int) error {
	r.init()
	poll := r.CRDPollInterval
	if poll <= 0 {
		poll = DefaultCRDPollInterval
	}
	policies := &optionalKind{
		mapper: mgr.GetRESTMapper(),
		gk:     lbv1alpha1.GroupVersion.WithKind("ServicePolicy").GroupKind(),
		inner: source.Kind(mgr.GetCache(), client.Object(&lbv1alpha1.ServicePolicy{}),
			handler.EnqueueRequestsFromMapFunc(r.policyToServices), predicate.GenerationChangedPredicate{}),
		poll: poll,
	}
	r.policiesWatched = policies.started.Load
	b := ctrl.NewControllerManagedBy(mgr)
	if r.Health != nil {
		b = b.WatchesRawSource(r.Health.source()) // a verdict changed: translate its Services again
	}
	return b.
		Named("service").
		// Services never bump metadata.generation: compare what the translation reads instead.
		For(&corev1.Service{}, builder.WithPredicates(predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
			o, n := e.ObjectOld.(*corev1.Service), e.ObjectNew.(*corev1.Service)
			return desired.InputsChanged(o, n)
		}})).
		Watches(&discoveryv1.EndpointSlice{}, handler.EnqueueRequestsFromMapFunc(sliceToService)).
		WatchesRawSource(policies).
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
	r.policyEpochs.bump(o.GetNamespace())
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
