package policy

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/ipvs-operator/ipvs-operator/api/v1alpha1"
)

var t0 = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

// pol makes a policy created `created` seconds after t0 (a smaller value is an older policy).
func pol(ns, name string, created int, sel *metav1.LabelSelector) v1alpha1.ServicePolicy {
	return v1alpha1.ServicePolicy{
		ObjectMeta: metav1.ObjectMeta{
			Namespace:         ns,
			Name:              name,
			CreationTimestamp: metav1.NewTime(t0.Add(time.Duration(created) * time.Second)),
		},
		Spec: v1alpha1.ServicePolicySpec{Selector: sel},
	}
}

func svc(ns, name string, lbls map[string]string) corev1.Service {
	return corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: lbls}}
}

func match(kv ...string) *metav1.LabelSelector {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return &metav1.LabelSelector{MatchLabels: m}
}

func key(ns, name string) types.NamespacedName {
	return types.NamespacedName{Namespace: ns, Name: name}
}

func TestResolve(t *testing.T) {
	web := svc("ns", "web", map[string]string{"app": "web", "tier": "front"})
	api := svc("ns", "api", map[string]string{"app": "api", "tier": "front"})
	db := svc("ns", "db", map[string]string{"app": "db", "tier": "back"})
	other := svc("other", "web", map[string]string{"app": "web", "tier": "front"})

	type want struct {
		applied  []string
		lost     []LostService
		selErr   bool
		selErrIs error
	}
	tests := []struct {
		name      string
		policies  []v1alpha1.ServicePolicy
		services  []corev1.Service
		want      map[types.NamespacedName]want
		governing map[types.NamespacedName]types.NamespacedName
	}{
		{
			name:      "no policies",
			services:  []corev1.Service{web},
			want:      map[types.NamespacedName]want{},
			governing: map[types.NamespacedName]types.NamespacedName{},
		},
		{
			name:     "one policy selects by label, sorted, only in its namespace",
			policies: []v1alpha1.ServicePolicy{pol("ns", "front", 0, match("tier", "front"))},
			services: []corev1.Service{web, db, api, other},
			want:     map[types.NamespacedName]want{key("ns", "front"): {applied: []string{"api", "web"}}},
			governing: map[types.NamespacedName]types.NamespacedName{
				key("ns", "web"): key("ns", "front"), key("ns", "api"): key("ns", "front"),
			},
		},
		{
			name:     "empty selector selects every Service of the namespace",
			policies: []v1alpha1.ServicePolicy{pol("ns", "all", 0, &metav1.LabelSelector{})},
			services: []corev1.Service{web, db, other},
			want:     map[types.NamespacedName]want{key("ns", "all"): {applied: []string{"db", "web"}}},
			governing: map[types.NamespacedName]types.NamespacedName{
				key("ns", "web"): key("ns", "all"), key("ns", "db"): key("ns", "all"),
			},
		},
		{
			name:      "selector matching nothing",
			policies:  []v1alpha1.ServicePolicy{pol("ns", "none", 0, match("app", "nope"))},
			services:  []corev1.Service{web},
			want:      map[types.NamespacedName]want{key("ns", "none"): {}},
			governing: map[types.NamespacedName]types.NamespacedName{},
		},
		{
			name: "older policy wins, newer one lists what it lost and to whom",
			policies: []v1alpha1.ServicePolicy{
				pol("ns", "a-newer", 10, match("tier", "front")),
				pol("ns", "z-older", 0, &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
					{Key: "app", Operator: metav1.LabelSelectorOpIn, Values: []string{"web", "api"}},
				}}),
			},
			services: []corev1.Service{web, api, db},
			want: map[types.NamespacedName]want{
				key("ns", "z-older"): {applied: []string{"api", "web"}},
				key("ns", "a-newer"): {lost: []LostService{{"api", "z-older"}, {"web", "z-older"}}},
			},
			governing: map[types.NamespacedName]types.NamespacedName{
				key("ns", "web"): key("ns", "z-older"), key("ns", "api"): key("ns", "z-older"),
			},
		},
		{
			name: "same creation time: the smaller name wins",
			policies: []v1alpha1.ServicePolicy{
				pol("ns", "b", 0, match("app", "web")),
				pol("ns", "a", 0, match("app", "web")),
			},
			services: []corev1.Service{web},
			want: map[types.NamespacedName]want{
				key("ns", "a"): {applied: []string{"web"}},
				key("ns", "b"): {lost: []LostService{{"web", "a"}}},
			},
			governing: map[types.NamespacedName]types.NamespacedName{key("ns", "web"): key("ns", "a")},
		},
		{
			name: "three policies, partial overlaps, several winners",
			policies: []v1alpha1.ServicePolicy{
				pol("ns", "newest", 20, &metav1.LabelSelector{}),
				pol("ns", "middle", 10, match("tier", "front")),
				pol("ns", "oldest", 0, match("app", "web")),
			},
			services: []corev1.Service{web, api, db},
			want: map[types.NamespacedName]want{
				key("ns", "oldest"): {applied: []string{"web"}},
				key("ns", "middle"): {applied: []string{"api"}, lost: []LostService{{"web", "oldest"}}},
				key("ns", "newest"): {applied: []string{"db"}, lost: []LostService{{"api", "middle"}, {"web", "oldest"}}},
			},
			governing: map[types.NamespacedName]types.NamespacedName{
				key("ns", "web"): key("ns", "oldest"), key("ns", "api"): key("ns", "middle"),
				key("ns", "db"): key("ns", "newest"),
			},
		},
		{
			name: "policies of different namespaces never conflict",
			policies: []v1alpha1.ServicePolicy{
				pol("ns", "p", 10, match("app", "web")),
				pol("other", "p", 0, match("app", "web")),
			},
			services: []corev1.Service{web, other},
			want: map[types.NamespacedName]want{
				key("ns", "p"):    {applied: []string{"web"}},
				key("other", "p"): {applied: []string{"web"}},
			},
			governing: map[types.NamespacedName]types.NamespacedName{
				key("ns", "web"): key("ns", "p"), key("other", "web"): key("other", "p"),
			},
		},
		{
			name: "invalid selector selects nothing, is reported, and does not block a newer policy",
			policies: []v1alpha1.ServicePolicy{
				pol("ns", "bad", 0, &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
					{Key: "app", Operator: "Resembles", Values: []string{"web"}},
				}}),
				pol("ns", "good", 10, match("app", "web")),
			},
			services: []corev1.Service{web},
			want: map[types.NamespacedName]want{
				key("ns", "bad"):  {selErr: true},
				key("ns", "good"): {applied: []string{"web"}},
			},
			governing: map[types.NamespacedName]types.NamespacedName{key("ns", "web"): key("ns", "good")},
		},
		{
			name: "In with no values is invalid",
			policies: []v1alpha1.ServicePolicy{
				pol("ns", "bad", 0, &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
					{Key: "app", Operator: metav1.LabelSelectorOpIn},
				}}),
			},
			services:  []corev1.Service{web},
			want:      map[types.NamespacedName]want{key("ns", "bad"): {selErr: true}},
			governing: map[types.NamespacedName]types.NamespacedName{},
		},
		{
			name:      "missing selector is reported as required",
			policies:  []v1alpha1.ServicePolicy{pol("ns", "nil", 0, nil)},
			services:  []corev1.Service{web},
			want:      map[types.NamespacedName]want{key("ns", "nil"): {selErr: true, selErrIs: ErrSelectorRequired}},
			governing: map[types.NamespacedName]types.NamespacedName{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			policiesBefore := append([]v1alpha1.ServicePolicy(nil), tt.policies...)
			res := Resolve(tt.policies, tt.services)

			if diff := cmp.Diff(policiesBefore, tt.policies); diff != "" {
				t.Errorf("Resolve modified its input (-before +after):\n%s", diff)
			}
			if len(res.Policies) != len(tt.want) {
				t.Errorf("got results for %d policies, want %d", len(res.Policies), len(tt.want))
			}
			for k, w := range tt.want {
				got, ok := res.Policies[k]
				if !ok {
					t.Errorf("no result for policy %s", k)
					continue
				}
				if diff := cmp.Diff(w.applied, got.Applied, cmpopts.EquateEmpty()); diff != "" {
					t.Errorf("policy %s applied (-want +got):\n%s", k, diff)
				}
				if diff := cmp.Diff(w.lost, got.Lost, cmpopts.EquateEmpty()); diff != "" {
					t.Errorf("policy %s lost (-want +got):\n%s", k, diff)
				}
				if (got.Invalid != nil) != w.selErr {
					t.Errorf("policy %s selector error = %v, want error: %v", k, got.Invalid, w.selErr)
				}
				if w.selErrIs != nil && !errors.Is(got.Invalid, w.selErrIs) {
					t.Errorf("policy %s selector error = %v, want %v", k, got.Invalid, w.selErrIs)
				}
			}
			if diff := cmp.Diff(tt.governing, res.Governing); diff != "" {
				t.Errorf("governing (-want +got):\n%s", diff)
			}

			// Governing must agree with Resolve for every Service, whatever the order of the policies.
			reversed := make([]v1alpha1.ServicePolicy, len(tt.policies))
			for i := range tt.policies {
				reversed[len(tt.policies)-1-i] = tt.policies[i]
			}
			for _, ps := range [][]v1alpha1.ServicePolicy{tt.policies, reversed} {
				for i := range tt.services {
					s := &tt.services[i]
					want, governed := res.Governing[key(s.Namespace, s.Name)]
					got := Governing(ps, s)
					switch {
					case !governed && got != nil:
						t.Errorf("Governing(%s/%s) = %s, want none", s.Namespace, s.Name, got.Name)
					case governed && got == nil:
						t.Errorf("Governing(%s/%s) = none, want %s", s.Namespace, s.Name, want)
					case governed && key(got.Namespace, got.Name) != want:
						t.Errorf("Governing(%s/%s) = %s, want %s", s.Namespace, s.Name, got.Name, want)
					}
				}
			}
		})
	}
}

func TestGoverningReturnsPointerIntoSlice(t *testing.T) {
	policies := []v1alpha1.ServicePolicy{pol("ns", "p", 0, &metav1.LabelSelector{})}
	s := svc("ns", "web", nil)
	if got := Governing(policies, &s); got != &policies[0] {
		t.Fatalf("Governing returned %p, want %p (an element of the slice)", got, &policies[0])
	}
}

func TestOlder(t *testing.T) {
	a := pol("ns", "a", 0, nil)
	b := pol("ns", "b", 0, nil)
	newer := pol("ns", "0", 1, nil)
	tests := []struct {
		name string
		x, y v1alpha1.ServicePolicy
		want bool
	}{
		{"earlier creation wins over a smaller name", a, newer, true},
		{"later creation loses", newer, a, false},
		{"same time: smaller name", a, b, true},
		{"same time: larger name", b, a, false},
		{"irreflexive", a, a, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Older(&tt.x, &tt.y); got != tt.want {
				t.Errorf("Older(%s, %s) = %v, want %v", tt.x.Name, tt.y.Name, got, tt.want)
			}
		})
	}
}

// TestCheckHealthCheck: a health check the CRD would refuse makes the policy invalid (it selects nothing),
// naming the field, as the API server would.
func TestCheckHealthCheck(t *testing.T) {
	for _, tc := range []struct {
		name  string
		hc    *v1alpha1.HealthCheckSpec
		field string // "" means valid
	}{
		{"none", nil, ""},
		{"all defaults", &v1alpha1.HealthCheckSpec{}, ""},
		{"HTTP with path", &v1alpha1.HealthCheckSpec{Protocol: v1alpha1.HealthCheckHTTP, Path: "/healthz"}, ""},
		{"timeout equal to period", &v1alpha1.HealthCheckSpec{PeriodSeconds: 3, TimeoutSeconds: 3}, "spec.healthCheck.timeoutSeconds"},
		{"period too long", &v1alpha1.HealthCheckSpec{PeriodSeconds: 301}, "spec.healthCheck.periodSeconds"},
		{"unknown protocol", &v1alpha1.HealthCheckSpec{Protocol: "UDP"}, "spec.healthCheck.protocol"},
		{"path with TCP", &v1alpha1.HealthCheckSpec{Path: "/x"}, "spec.healthCheck.path"},
		{"threshold too high", &v1alpha1.HealthCheckSpec{HealthyThreshold: 101}, "spec.healthCheck.healthyThreshold"},
		{"reversed status range", &v1alpha1.HealthCheckSpec{Protocol: v1alpha1.HealthCheckHTTP, ExpectedStatuses: []v1alpha1.StatusRange{{Min: 300, Max: 200}}}, "spec.healthCheck.expectedStatuses[0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := pol("ns", "p", 0, match())
			p.Spec.HealthCheck = tc.hc
			err := Check(&p)
			if tc.field == "" {
				if err != nil {
					t.Fatalf("Check = %v, want valid", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidSpec) || !strings.Contains(err.Error(), tc.field+":") {
				t.Fatalf("Check = %v, want ErrInvalidSpec naming %s", err, tc.field)
			}
			if Governing([]v1alpha1.ServicePolicy{p}, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns"}}) != nil {
				t.Error("an invalid policy governs a Service")
			}
		})
	}
}

// TestCheckSlowStart: slow start with a scheduler that does not weigh real servers, or a window out of
// bounds, makes the policy invalid, naming the field, as the API server would.
func TestCheckSlowStart(t *testing.T) {
	for _, tc := range []struct {
		name      string
		scheduler v1alpha1.Scheduler
		window    int32 // 0: no slowStart
		field     string
	}{
		{"none with rr", v1alpha1.SchedulerRoundRobin, 0, ""},
		{"wrr", v1alpha1.SchedulerWeightedRoundRobin, 30, ""},
		{"wlc", v1alpha1.SchedulerWeightedLeastConnection, 1, ""},
		{"sed", v1alpha1.SchedulerShortestExpectedDelay, 3600, ""},
		{"nq", v1alpha1.SchedulerNeverQueue, 60, ""},
		{"default rr", "", 30, "spec.slowStart"},
		{"lc", v1alpha1.SchedulerLeastConnection, 30, "spec.slowStart"},
		{"sh", v1alpha1.SchedulerSourceHashing, 30, "spec.slowStart"},
		{"mh", v1alpha1.SchedulerMaglevHashing, 30, "spec.slowStart"},
		{"dh", v1alpha1.SchedulerDestinationHashing, 30, "spec.slowStart"},
		{"window over an hour", v1alpha1.SchedulerWeightedRoundRobin, 3601, "spec.slowStart.windowSeconds"},
		{"window negative", v1alpha1.SchedulerWeightedRoundRobin, -1, "spec.slowStart.windowSeconds"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := pol("ns", "p", 0, match())
			p.Spec.Scheduler = tc.scheduler
			if tc.window != 0 {
				p.Spec.SlowStart = &v1alpha1.SlowStartSpec{WindowSeconds: tc.window}
			}
			err := Check(&p)
			if tc.field == "" {
				if err != nil {
					t.Fatalf("Check = %v, want valid", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidSpec) || !strings.Contains(err.Error(), tc.field+":") {
				t.Fatalf("Check = %v, want ErrInvalidSpec naming %s", err, tc.field)
			}
		})
	}
}
