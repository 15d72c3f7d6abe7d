package agent

import (
	"fmt"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
)

// Why a Service's kernel state is held as it is instead of following its objects. They are the reasons of
// the Warning Events on the Service and the label of the services_held gauge.
const (
	// HeldDependencyError: the Service, its EndpointSlices or the ServicePolicies could not be read (an API
	// hiccup, a cache not synced). It is retried with backoff; if it lasts, the agent reports not ready.
	HeldDependencyError = "DependencyError"
	// HeldPolicyUnknown: an invalid ServicePolicy may govern the Service and this agent never saw its last
	// valid settings (it restarted since), so it cannot tell how to balance it. Fixing the policy ends it.
	HeldPolicyUnknown = "PolicyUnknown"
	// HeldInvalidService: the Service itself is malformed (see desired.ErrInvalid). Editing it ends it.
	HeldInvalidService = "InvalidService"
)

// heldReasons are every reason, so the gauge reports 0 for those not in force.
var heldReasons = []string{HeldDependencyError, HeldPolicyUnknown, HeldInvalidService}

// metricServicesHeld is registered with the others by RegisterMetrics.
var metricServicesHeld = prometheus.NewGaugeVec(prometheus.GaugeOpts{
	Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: "services_held",
	Help: "Services whose kernel state is kept as it is because their desired state cannot be computed, by reason.",
}, []string{"reason"})

// DefaultHeldUnreadyAfter is how long a Service may be held for a dependency error before the agent reports
// not ready: long enough to ride out an API server restart, short enough that a broken agent shows.
const DefaultHeldUnreadyAfter = 2 * time.Minute

// heldServices tracks the Services whose kernel state is held, and since when. Its transitions decide when
// a Warning Event is due (once per new reason, not once per retry).
type heldServices struct {
	clock clock.PassiveClock
	mu    sync.Mutex
	held  map[types.NamespacedName]heldState
}

type heldState struct {
	reason string
	since  time.Time
	err    error
}

func newHeldServices(clk clock.PassiveClock) *heldServices {
	return &heldServices{clock: clk, held: map[types.NamespacedName]heldState{}}
}

// hold records that key is held for reason; it reports whether that is new (no Event was sent for it yet).
func (h *heldServices) hold(key types.NamespacedName, reason string, err error) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	prev, ok := h.held[key]
	if ok && prev.reason == reason {
		prev.err = err
		h.held[key] = prev
		return false
	}
	h.held[key] = heldState{reason: reason, since: h.clock.Now(), err: err}
	h.publishLocked()
	return true
}

// release records that key follows its objects again.
func (h *heldServices) release(key types.NamespacedName) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.held[key]; ok {
		delete(h.held, key)
		h.publishLocked()
	}
}

func (h *heldServices) publishLocked() {
	n := map[string]int{}
	for _, s := range h.held {
		n[s.reason]++
	}
	for _, r := range heldReasons {
		metricServicesHeld.WithLabelValues(r).Set(float64(n[r]))
	}
}

// check fails when a Service has been held for a dependency error longer than after: the agent cannot read
// the cluster and its node's data path is frozen, which an operator should see. Invalid objects do not make
// the agent unready: they are the objects' problem, reported on them.
func (h *heldServices) check(after time.Duration) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.clock.Now()
	var stuck []string
	var last error
	for k, s := range h.held {
		if s.reason == HeldDependencyError && now.Sub(s.since) > after {
			stuck = append(stuck, k.String())
			last = s.err
		}
	}
	if len(stuck) == 0 {
		return nil
	}
	sort.Strings(stuck)
	return fmt.Errorf("%d Services held for over %s because their objects cannot be read (first: %s): %w",
		len(stuck), after, stuck[0], last)
}

// ReadyCheck is a healthz.Checker over the held Services (see check).
func (r *ServiceReconciler) ReadyCheck(*http.Request) error {
	after := r.HeldUnreadyAfter
	if after <= 0 {
		after = DefaultHeldUnreadyAfter
	}
	return r.heldServices().check(after)
}
