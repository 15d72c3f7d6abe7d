// Package policy decides which ServicePolicy governs which Service. It is pure (no client, no cache, no
// clock): the operator uses it to write ServicePolicy status, and the agent uses it to pick the scheduler and
// drain settings of each Service it programs, so both always agree.
//
// The rules:
//   - a policy selects Services in its own namespace whose labels match spec.selector (an empty selector
//     selects every Service of the namespace);
//   - a policy that is invalid (a missing or invalid selector, or a spec the CRD's validation would refuse)
//     selects nothing, and Resolve reports why (see Check; agents keep the last valid settings of such a
//     policy for the Services it governed, so traffic does not change silently);
//   - when two or more policies select the same Service, the oldest governs it: the earliest
//     creationTimestamp, then the smallest name. Creation timestamps never change, so a Service does not
//     flap between policies when a newer one is created or edited.
package policy

import (
	"errors"
	"fmt"
	"slices"
	"sort"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	"github.com/ipvs-operator/ipvs-operator/api/v1alpha1"
)

// ErrSelectorRequired is reported for a policy without spec.selector (the CRD requires one; this happens only
// with objects that bypassed the API server's validation, e.g. in tests).
var ErrSelectorRequired = errors.New("spec.selector is required")

// Resolution says, for each policy, which Services it governs and which it selects but lost to an older
// policy, and for each governed Service, which policy governs it.
type Resolution struct {
	// Policies has one entry per policy given to Resolve, keyed by namespace/name.
	Policies map[types.NamespacedName]PolicyResult
	// Governing maps every governed Service (namespace/name) to the policy that governs it. Services that no
	// policy selects are absent.
	Governing map[types.NamespacedName]types.NamespacedName
}

// PolicyResult is what one policy ended up with.
type PolicyResult struct {
	// Applied holds the names of the Services this policy governs, sorted.
	Applied []string
	// Lost holds the Services this policy selects that an older policy governs instead, sorted by Service.
	Lost []LostService
	// Invalid is set when the policy is invalid (see Check); such a policy selects nothing.
	Invalid error
}

// LostService is a Service a policy selects but does not govern.
type LostService struct {
	// Service is the Service's name (in the policy's namespace).
	Service string
	// Winner is the name of the older policy that governs the Service.
	Winner string
}

// Selector returns the label selector of a policy. A missing selector is ErrSelectorRequired; an invalid one
// is the parse error. On error the returned selector matches nothing.
func Selector(p *v1alpha1.ServicePolicy) (labels.Selector, error) {
	if p.Spec.Selector == nil {
		return labels.Nothing(), ErrSelectorRequired
	}
	sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
	if err != nil {
		return labels.Nothing(), fmt.Errorf("invalid spec.selector: %w", err)
	}
	return sel, nil
}

// ErrInvalidSpec is matched by Check's errors for a spec the CRD's validation refuses (an unknown scheduler, a
// drain timeout out of range): objects written before the validation existed, or that bypassed it.
var ErrInvalidSpec = errors.New("invalid spec")

// Check returns why a policy selects nothing, or nil: a missing or invalid selector (the API server does not
// check label syntax inside a custom resource's selector), or a spec the CRD's validation would refuse.
func Check(p *v1alpha1.ServicePolicy) error {
	_, err := checked(p)
	return err
}

// checked is Check that also returns the selector (labels.Nothing() when invalid).
func checked(p *v1alpha1.ServicePolicy) (labels.Selector, error) {
	sel, err := Selector(p)
	if err != nil {
		return sel, err
	}
	if s := p.Spec.SchedulerOrDefault(); !slices.Contains(v1alpha1.Schedulers, s) {
		return labels.Nothing(), fmt.Errorf("%w: spec.scheduler: Unsupported value: %q", ErrInvalidSpec, s)
	}
	if d := p.Spec.DrainTimeoutSeconds(); d < 0 || d > v1alpha1.MaxDrainTimeoutSeconds {
		return labels.Nothing(), fmt.Errorf("%w: spec.drain.timeoutSeconds: Invalid value: %d: must be between 0 and %d", ErrInvalidSpec, d, v1alpha1.MaxDrainTimeoutSeconds)
	}
	if err := checkHealth(p.Spec.HealthCheck.Defaulted()); err != nil {
		return labels.Nothing(), fmt.Errorf("%w: %w", ErrInvalidSpec, err)
	}
	if err := checkSlowStart(&p.Spec); err != nil {
		return labels.Nothing(), fmt.Errorf("%w: %w", ErrInvalidSpec, err)
	}
	return sel, nil
}

// checkSlowStart is the CRD's validation of spec.slowStart, for objects that bypassed it.
func checkSlowStart(spec *v1alpha1.ServicePolicySpec) error {
	if spec.SlowStart == nil {
		return nil
	}
	if w := spec.SlowStart.WindowSeconds; w < 1 || w > v1alpha1.MaxSlowStartWindowSeconds {
		return fmt.Errorf("spec.slowStart.windowSeconds: Invalid value: %d: must be between 1 and %d", w, v1alpha1.MaxSlowStartWindowSeconds)
	}
	if s := spec.SchedulerOrDefault(); !slices.Contains(v1alpha1.WeightedSchedulers, s) {
		return fmt.Errorf("spec.slowStart: Invalid value: slowStart needs a scheduler that weighs real servers (wrr, wlc, sed or nq), not %s", s)
	}
	return nil
}

// checkHealth is the CRD's validation of spec.healthCheck (already defaulted), for objects that bypassed it.
func checkHealth(h *v1alpha1.HealthCheckSpec) error {
	if h == nil {
		return nil
	}
	switch {
	case h.Protocol != v1alpha1.HealthCheckTCP && h.Protocol != v1alpha1.HealthCheckHTTP:
		return fmt.Errorf("spec.healthCheck.protocol: Unsupported value: %q", h.Protocol)
	case h.PeriodSeconds < v1alpha1.MinHealthCheckPeriodSeconds || h.PeriodSeconds > v1alpha1.MaxHealthCheckPeriodSeconds:
		return fmt.Errorf("spec.healthCheck.periodSeconds: Invalid value: %d: must be between %d and %d", h.PeriodSeconds, v1alpha1.MinHealthCheckPeriodSeconds, v1alpha1.MaxHealthCheckPeriodSeconds)
	case h.TimeoutSeconds < 1 || h.TimeoutSeconds >= h.PeriodSeconds:
		return fmt.Errorf("spec.healthCheck.timeoutSeconds: Invalid value: %d: must be at least 1 and less than periodSeconds", h.TimeoutSeconds)
	case h.UnhealthyThreshold < 1 || h.UnhealthyThreshold > v1alpha1.MaxHealthCheckThreshold:
		return fmt.Errorf("spec.healthCheck.unhealthyThreshold: Invalid value: %d: must be between 1 and %d", h.UnhealthyThreshold, v1alpha1.MaxHealthCheckThreshold)
	case h.HealthyThreshold < 1 || h.HealthyThreshold > v1alpha1.MaxHealthCheckThreshold:
		return fmt.Errorf("spec.healthCheck.healthyThreshold: Invalid value: %d: must be between 1 and %d", h.HealthyThreshold, v1alpha1.MaxHealthCheckThreshold)
	case h.Protocol == v1alpha1.HealthCheckTCP && (h.Path != "" || len(h.ExpectedStatuses) > 0):
		return errors.New("spec.healthCheck.path: Invalid value: path and expectedStatuses are only for protocol HTTP")
	}
	for i, r := range h.ExpectedStatuses {
		if r.Min < 100 || r.Max > 599 || r.Min > r.Max {
			return fmt.Errorf("spec.healthCheck.expectedStatuses[%d]: Invalid value: %d-%d: must be a range within 100-599", i, r.Min, r.Max)
		}
	}
	return nil
}

// Older reports whether policy a takes precedence over policy b: a was created first, or both were created in
// the same second and a's name sorts first. It is a strict order on policies of one namespace.
func Older(a, b *v1alpha1.ServicePolicy) bool {
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return a.CreationTimestamp.Before(&b.CreationTimestamp)
	}
	return a.Name < b.Name
}

// Governing returns the policy that governs svc, or nil when none selects it. It is the cheap per-Service form
// of Resolve (one selector match per policy of the Service's namespace) and always agrees with it. Policies of
// other namespaces are ignored, so the caller may pass every policy it knows. The result points into policies.
func Governing(policies []v1alpha1.ServicePolicy, svc *corev1.Service) *v1alpha1.ServicePolicy {
	var winner *v1alpha1.ServicePolicy
	set := labels.Set(svc.Labels)
	for i := range policies {
		p := &policies[i]
		if p.Namespace != svc.Namespace {
			continue
		}
		if winner != nil && !Older(p, winner) {
			continue // cheaper than matching: it could not win anyway
		}
		if sel, err := checked(p); err != nil || !sel.Matches(set) {
			continue
		}
		winner = p
	}
	return winner
}

// Resolve matches every policy against every Service of its namespace and settles conflicts. Policies and
// Services may come from several namespaces and in any order; neither slice is modified.
func Resolve(policies []v1alpha1.ServicePolicy, services []corev1.Service) Resolution {
	res := Resolution{
		Policies:  make(map[types.NamespacedName]PolicyResult, len(policies)),
		Governing: map[types.NamespacedName]types.NamespacedName{},
	}

	// Oldest first, so the first policy that selects a Service is the one that governs it.
	ordered := make([]*v1alpha1.ServicePolicy, len(policies))
	for i := range policies {
		ordered[i] = &policies[i]
	}
	sort.SliceStable(ordered, func(i, j int) bool { return Older(ordered[i], ordered[j]) })

	byNamespace := map[string][]*corev1.Service{}
	for i := range services {
		svc := &services[i]
		byNamespace[svc.Namespace] = append(byNamespace[svc.Namespace], svc)
	}

	for _, p := range ordered {
		key := types.NamespacedName{Namespace: p.Namespace, Name: p.Name}
		result := PolicyResult{}
		sel, err := checked(p)
		if err != nil {
			result.Invalid = err
			res.Policies[key] = result
			continue
		}
		for _, svc := range byNamespace[p.Namespace] {
			if !sel.Matches(labels.Set(svc.Labels)) {
				continue
			}
			svcKey := types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}
			if winner, taken := res.Governing[svcKey]; taken {
				result.Lost = append(result.Lost, LostService{Service: svc.Name, Winner: winner.Name})
				continue
			}
			res.Governing[svcKey] = key
			result.Applied = append(result.Applied, svc.Name)
		}
		sort.Strings(result.Applied)
		sort.Slice(result.Lost, func(i, j int) bool { return result.Lost[i].Service < result.Lost[j].Service })
		res.Policies[key] = result
	}
	return res
}
