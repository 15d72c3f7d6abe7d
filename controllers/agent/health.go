package agent

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/flowcontrol"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/source"

	lbv1alpha1 "github.com/ipvs-operator/ipvs-operator/api/v1alpha1"
	"github.com/ipvs-operator/ipvs-operator/controllers/agent/desired"
	"github.com/ipvs-operator/ipvs-operator/controllers/agent/health"
	"github.com/ipvs-operator/ipvs-operator/ipvs"
)

// Event reasons of the health check, on the Service (one writer per object: each node's agent writes its
// own Events, naming its node).
const (
	ReasonHealthPanic      = "HealthCheckPanic"
	ReasonHealthPanicEnded = "HealthCheckPanicEnded"
	// ReasonEndpointUnhealthy: an endpoint crossed its unhealthy threshold and this node took it out of
	// rotation. ReasonEndpointHealthy: it passes again and is back (with slow start, ramping up).
	ReasonEndpointUnhealthy = "EndpointUnhealthy"
	ReasonEndpointHealthy   = "EndpointHealthy"
)

// Endpoint Events are rate-limited per Service and node, as client-go's legacy recorder limits each source
// and object (a token bucket): a burst of EndpointEventBurst, then one per EndpointEventInterval. A flapping
// endpoint, or a mass failure across a large Service, cannot flood the API server; what is dropped is
// counted in a log line, and the node's HealthCheckStatus and the metrics always have the current state.
const (
	EndpointEventBurst    = 10
	EndpointEventInterval = 30 * time.Second
)

// HealthChecker runs the agent's prober (a manager Runnable) and turns verdict changes into reconciles of
// the Services that own the targets. The ServiceReconciler reads its verdicts through desired.Options.Health
// and hands it, after each translation, what the Service needs probed.
type HealthChecker struct {
	prober  *health.Prober
	changes chan event.GenericEvent

	mu sync.Mutex
	// state per Service with a health check: real servers taken out, virtual servers in panic mode, and
	// the policy (its name, in the Service's namespace) whose check it is.
	state map[types.NamespacedName]serviceHealth
	// out and panicking are the sums of state's Out and of its Services in panic mode.
	out, panicking int
	// report writes the node's HealthCheckStatus objects (nil: no reports); see health_report.go.
	report *reporter

	// adopted returns what the engine adopted from the kernel (nil: nothing to remember); see remembered.
	adopted   func() []ipvs.VirtualServer
	seedOnce  sync.Once
	seeds     sets.Set[netip.Addr]
	seedUntil time.Time
}

// SeedWindow is how long after its first translation a restarted agent trusts what the kernel says the
// previous agent had taken out. Past it, a target new to the prober starts healthy whatever the kernel had.
const SeedWindow = 2 * time.Minute

// remembered reports whether the kernel, as adopted at start-up, held a real server of addr at weight 0: the
// previous agent had taken it out (a failed health check, or a drain). A target on such an address that the
// prober has not seen yet starts unhealthy, so a restart does not put back, for unhealthyThreshold periods,
// an endpoint that was out; it comes back after healthyThreshold passing probes, as it would have anyway.
// Real servers draining because their endpoint was not ready come back the same way if it is Ready now.
func (h *HealthChecker) remembered(addr netip.Addr) bool {
	if h.adopted == nil {
		return false
	}
	h.seedOnce.Do(func() {
		h.seeds = sets.New[netip.Addr]()
		h.seedUntil = time.Now().Add(SeedWindow)
		for _, vs := range h.adopted() {
			for _, d := range vs.Destinations {
				if d.Weight == 0 {
					h.seeds.Insert(d.Address)
				}
			}
		}
	})
	return h.seeds.Has(addr) && time.Now().Before(h.seedUntil)
}

// NewHealthChecker returns a HealthChecker; opts.OnChange, opts.OnProbe and opts.Initial are its own.
// adopted, if set, returns the engine's table once it has adopted the kernel's (syncer.Syncer.Programmed):
// it is read once, at the first translation, which the agent runs only after adoption.
func NewHealthChecker(opts health.Options, adopted func() []ipvs.VirtualServer) *HealthChecker {
	h := &HealthChecker{
		adopted: adopted,
		// Buffered so that a burst of verdict changes does not stall the probe workers; the controller
		// drains it into its work queue, which deduplicates.
		changes: make(chan event.GenericEvent, 1024),
		state:   map[types.NamespacedName]serviceHealth{},
	}
	opts.OnChange = h.enqueue
	opts.OnProbe = observeProbe
	opts.Initial = func(t health.Target) health.State { return health.State{Unhealthy: h.remembered(t.Addr)} }
	h.prober = health.NewProber(opts)
	currentHealthChecker.Store(h)
	return h
}

// Start runs the probes, and the reports if ReportTo was called, until ctx ends (manager.Runnable).
func (h *HealthChecker) Start(ctx context.Context) error {
	if h.report != nil {
		done := make(chan struct{})
		go func() { defer close(done); h.report.run(ctx) }()
		defer func() { <-done }()
	}
	return h.prober.Run(ctx)
}

// Counts returns how many targets are probed and how many of them are unhealthy.
func (h *HealthChecker) Counts() (targets, unhealthy int) { return h.prober.Counts() }

// NeedLeaderElection returns false: every node probes for itself.
func (h *HealthChecker) NeedLeaderElection() bool { return false }

// Unhealthy implements health.View: the prober's verdict, or for a target it has not seen yet, what the
// kernel remembers (see remembered).
func (h *HealthChecker) Unhealthy(t health.Target) bool {
	unhealthy, registered := h.prober.Lookup(t)
	if registered {
		return unhealthy
	}
	return h.remembered(t.Addr)
}

func (h *HealthChecker) enqueue(owners []string) {
	for _, o := range owners {
		ns, name, _ := strings.Cut(o, "/")
		h.changes <- event.GenericEvent{Object: &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}}
	}
}

func (h *HealthChecker) source() source.Source {
	return source.Channel(h.changes, &handler.EnqueueRequestForObject{})
}

// observe records what the latest translation of a Service said about its health check (zero: none, or
// the Service is gone): the targets to probe, and, on a change of panic mode, an Event on the Service.
func (h *HealthChecker) observe(ctx context.Context, key types.NamespacedName, svc *corev1.Service, hl desired.Health, policyName string, rec events.EventRecorder, node string) {
	h.mu.Lock()
	_, had := h.state[key]
	if !had && len(hl.Targets) == 0 && len(hl.Panic) == 0 {
		// No health check before or now (nearly every Service): nothing to probe, count or tell. The prober
		// holds targets for a Service only while its state is here.
		h.mu.Unlock()
		return
	}
	h.mu.Unlock()
	h.prober.Set(key.String(), hl.Targets)
	h.mu.Lock()
	prev := h.state[key]
	cur := serviceHealth{Health: desired.Health{Out: hl.Out, Taken: hl.Taken, Panic: hl.Panic}, policy: policyName, events: prev.events}
	if len(hl.Targets) == 0 && len(hl.Panic) == 0 {
		delete(h.state, key)
		cur = serviceHealth{}
	} else {
		if cur.events == nil {
			cur.events = newEventLimiter()
		}
		h.state[key] = cur // the targets live in the prober
	}
	if h.report != nil && !cur.sameReport(prev) {
		h.report.touch(key.Namespace, prev.policy, cur.policy)
	}
	// Totals kept incrementally: a full pass per sync would cost O(Services) each time.
	h.out += cur.Out - prev.Out
	h.panicking += boolInt(len(cur.Panic) > 0) - boolInt(len(prev.Panic) > 0)
	out, panicking := h.out, h.panicking
	h.mu.Unlock()
	metricHealthOut.Set(float64(out))
	metricHealthPanic.Set(float64(panicking))

	log := logf.FromContext(ctx).WithValues("service", key)
	if prev.Out != hl.Out {
		log.Info("Health check changed the real servers in rotation", "takenOut", hl.Out)
	}
	if svc != nil {
		h.endpointEvents(log, svc, prev.Taken, hl.Taken, cur.events, rec, node)
	}
	was, is := len(prev.Panic) > 0, len(hl.Panic) > 0
	if was == is || svc == nil {
		return
	}
	if is {
		ports := make([]string, len(hl.Panic))
		for i, k := range hl.Panic {
			ports[i] = k.String()
		}
		log.Info("Every endpoint fails its health check: serving all of them (panic mode)", "virtualServers", ports)
		rec.Eventf(svc, nil, corev1.EventTypeWarning, ReasonHealthPanic, "HealthCheck",
			"node %s: every endpoint of %s fails its health check; serving all of them (panic mode)", node, strings.Join(ports, ", "))
		return
	}
	log.Info("Panic mode ended: some endpoints pass their health check again")
	rec.Eventf(svc, nil, corev1.EventTypeNormal, ReasonHealthPanicEnded, "HealthCheck",
		"node %s: some endpoints pass their health check again; unhealthy ones are out of rotation", node)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// serviceHealth is what a Service's latest translation said about its health check.
type serviceHealth struct {
	desired.Health
	policy string
	// events limits the Service's endpoint Events on this node (nil until the first one).
	events *eventLimiter
}

// eventLimiter is a token bucket with a count of what it refused since the last Event it let through.
type eventLimiter struct {
	bucket  flowcontrol.PassiveRateLimiter
	dropped int
}

// endpointEvents sends, on the Service, an Event per probe target newly taken out (Warning) and per target
// back in rotation because it passes again (Normal); a target that left the Taken list for another reason
// (its endpoint went away, or panic mode serves it) gets none. Several virtual servers of one endpoint
// (ports, families) share a target and one Event. Only this node's agent writes these Events (the note
// names the node), so every Event object has one writer.
func (h *HealthChecker) endpointEvents(log logr.Logger, svc *corev1.Service, before, after []desired.Taken, lim *eventLimiter, rec events.EventRecorder, node string) {
	if rec == nil || lim == nil {
		return
	}
	was, is := takenTargets(before), takenTargets(after)
	type ev struct {
		warning bool
		t       health.Target
	}
	var out []ev
	for _, t := range sortedTargets(is.Difference(was)) {
		out = append(out, ev{true, t})
	}
	for _, t := range sortedTargets(was.Difference(is)) {
		if unhealthy, registered := h.prober.Lookup(t); registered && !unhealthy {
			out = append(out, ev{false, t})
		}
	}
	for _, e := range out {
		if !lim.bucket.TryAccept() {
			lim.dropped++
			continue
		}
		if lim.dropped > 0 {
			log.Info("Endpoint health Events were rate-limited", "dropped", lim.dropped)
			lim.dropped = 0
		}
		if e.warning {
			rec.Eventf(svc, nil, corev1.EventTypeWarning, ReasonEndpointUnhealthy, "HealthCheck",
				"node %s: endpoint %s failed %d health checks in a row: out of rotation on this node", node, e.t, e.t.UnhealthyThreshold)
		} else {
			rec.Eventf(svc, nil, corev1.EventTypeNormal, ReasonEndpointHealthy, "HealthCheck",
				"node %s: endpoint %s passes its health check again: back in rotation on this node", node, e.t)
		}
	}
}

func takenTargets(taken []desired.Taken) sets.Set[health.Target] {
	out := sets.New[health.Target]()
	for _, t := range taken {
		out.Insert(t.Target)
	}
	return out
}

func sortedTargets(s sets.Set[health.Target]) []health.Target {
	out := s.UnsortedList()
	slices.SortFunc(out, func(a, b health.Target) int { return strings.Compare(a.String(), b.String()) })
	return out
}

func newEventLimiter() *eventLimiter {
	return &eventLimiter{bucket: flowcontrol.NewTokenBucketPassiveRateLimiter(float32(time.Second)/float32(EndpointEventInterval), EndpointEventBurst)}
}

// sameReport reports whether two states would put the same lines in the policy's report.
func (s serviceHealth) sameReport(o serviceHealth) bool {
	return s.policy == o.policy && len(s.Panic) == len(o.Panic) && slices.Equal(s.Taken, o.Taken)
}

// healthCheckSettings translates a policy's spec.healthCheck (defaulted) for the Service translation.
func healthCheckSettings(spec *lbv1alpha1.HealthCheckSpec) *desired.HealthCheck {
	hc := spec.Defaulted()
	if hc == nil {
		return nil
	}
	ranges := make([]string, len(hc.ExpectedStatuses))
	for i, r := range hc.ExpectedStatuses {
		ranges[i] = fmt.Sprintf("%d-%d", r.Min, r.Max)
	}
	return &desired.HealthCheck{
		Check: health.Check{
			Protocol:           health.Protocol(hc.Protocol),
			Path:               hc.Path,
			Statuses:           strings.Join(ranges, ","),
			Period:             time.Duration(hc.PeriodSeconds) * time.Second,
			Timeout:            time.Duration(hc.TimeoutSeconds) * time.Second,
			UnhealthyThreshold: hc.UnhealthyThreshold,
			HealthyThreshold:   hc.HealthyThreshold,
		},
		Port: hc.Port,
	}
}

// currentHealthChecker backs the target gauges (read at scrape time, not on every change).
var currentHealthChecker atomic.Pointer[HealthChecker]

func healthTargetCounts() (targets, unhealthy int) {
	if h := currentHealthChecker.Load(); h != nil {
		return h.prober.Counts()
	}
	return 0, 0
}

var (
	metricProbes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: "health_probes_total",
		Help: "Health check probes by protocol and result (success, failure).",
	}, []string{"protocol", "result"})
	metricProbeDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: "health_probe_duration_seconds",
		Help:    "Time of one health check probe, by protocol.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
	}, []string{"protocol"})
	metricHealthOut = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: "health_real_servers_out",
		Help: "Real servers this node keeps out of rotation because their endpoint fails its health check.",
	})
	metricHealthPanic = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: "health_panic_services",
		Help: "Services with a virtual server whose every endpoint fails its health check, served anyway (panic mode).",
	})
	metricHealthTargets = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: "health_targets",
		Help: "Distinct (endpoint, port, check) targets this node probes.",
	}, func() float64 { n, _ := healthTargetCounts(); return float64(n) })
	metricHealthUnhealthy = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: "health_unhealthy_targets",
		Help: "Probed targets past their unhealthy threshold.",
	}, func() float64 { _, n := healthTargetCounts(); return float64(n) })

	healthCollectors = []prometheus.Collector{metricProbes, metricProbeDuration, metricHealthOut, metricHealthPanic,
		metricHealthTargets, metricHealthUnhealthy}
)

func observeProbe(t health.Target, err error, took time.Duration) {
	result := "success"
	if err != nil {
		result = "failure"
	}
	metricProbes.WithLabelValues(string(t.Protocol), result).Inc()
	metricProbeDuration.WithLabelValues(string(t.Protocol)).Observe(took.Seconds())
}
