package operator

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/ipvs-operator/ipvs-operator/api/policy"
	"github.com/ipvs-operator/ipvs-operator/api/v1alpha1"
)

func condition(t, status, reason, message string, gen int64) metav1.Condition {
	return metav1.Condition{Type: t, Status: metav1.ConditionStatus(status), Reason: reason, Message: message, ObservedGeneration: gen}
}

func TestDesiredStatus(t *testing.T) {
	p := &v1alpha1.ServicePolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "b", Generation: 3}}
	noConflict := condition("Conflicted", "False", "NoConflict", "No older policy governs a Service this policy selects", 3)
	tests := []struct {
		name   string
		status v1alpha1.ServicePolicyStatus // the policy's status before
		result policy.PolicyResult
		want   v1alpha1.ServicePolicyStatus
	}{
		{
			name:   "applies",
			result: policy.PolicyResult{Applied: []string{"api", "web"}},
			want: v1alpha1.ServicePolicyStatus{
				Services: []string{"api", "web"}, ServiceCount: 2, ObservedGeneration: 3,
				Conditions: []metav1.Condition{condition("Ready", "True", "Applied", "Applies to 2 Services", 3), noConflict},
			},
		},
		{
			name:   "selects nothing",
			result: policy.PolicyResult{},
			want: v1alpha1.ServicePolicyStatus{
				ObservedGeneration: 3,
				Conditions: []metav1.Condition{
					condition("Ready", "False", "NoServicesSelected", "The selector matches no Service in namespace shop", 3), noConflict,
				},
			},
		},
		{
			name:   "invalid selector",
			result: policy.PolicyResult{Invalid: errors.New("bad operator")},
			want: v1alpha1.ServicePolicyStatus{
				ObservedGeneration: 3,
				Conditions: []metav1.Condition{
					condition("Ready", "False", "InvalidSelector", "The policy is invalid (bad operator). It selects no new "+
						"Service; the Services it governed keep its last valid settings until it is fixed or deleted", 3), noConflict,
				},
			},
		},
		{
			name:   "turned invalid: keeps the Services it governed",
			status: v1alpha1.ServicePolicyStatus{Services: []string{"web"}, ServiceCount: 1},
			result: policy.PolicyResult{Invalid: fmt.Errorf("%w: spec.drain.timeoutSeconds: Invalid value: -1", policy.ErrInvalidSpec)},
			want: v1alpha1.ServicePolicyStatus{
				Services: []string{"web"}, ServiceCount: 1, ObservedGeneration: 3,
				Conditions: []metav1.Condition{
					condition("Ready", "False", "InvalidSpec", "The policy is invalid (invalid spec: spec.drain.timeoutSeconds: "+
						"Invalid value: -1). It selects no new Service; the Services it governed keep its last valid settings "+
						"until it is fixed or deleted", 3), noConflict,
				},
			},
		},
		{
			name: "partly conflicted, several winners",
			result: policy.PolicyResult{
				Applied: []string{"db"},
				Lost:    []policy.LostService{{Service: "web", Winner: "a"}, {Service: "api", Winner: "a"}, {Service: "cache", Winner: "0"}},
			},
			want: v1alpha1.ServicePolicyStatus{
				Services: []string{"db"}, ServiceCount: 1, ObservedGeneration: 3,
				Conditions: []metav1.Condition{
					condition("Ready", "True", "Applied", "Applies to 1 Service", 3),
					condition("Conflicted", "True", "ConflictingPolicy",
						`service cache is governed by older policy "0"; services api, web are governed by older policy "a"`, 3),
				},
			},
		},
		{
			name:   "entirely lost",
			result: policy.PolicyResult{Lost: []policy.LostService{{Service: "web", Winner: "a"}}},
			want: v1alpha1.ServicePolicyStatus{
				ObservedGeneration: 3,
				Conditions: []metav1.Condition{
					condition("Ready", "False", "ConflictingPolicy", "Every Service it selects (1) is governed by an older policy", 3),
					condition("Conflicted", "True", "ConflictingPolicy", `service web is governed by older policy "a"`, 3),
				},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := p.DeepCopy()
			p.Status = tt.status
			got := desiredStatus(p, tt.result)
			if diff := cmp.Diff(tt.want, got, cmpopts.IgnoreFields(metav1.Condition{}, "LastTransitionTime")); diff != "" {
				t.Errorf("status (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDesiredStatusKeepsTransitionTimeAndIsStable(t *testing.T) {
	long := metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	p := &v1alpha1.ServicePolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", Generation: 2}}
	p.Status = desiredStatus(p, policy.PolicyResult{Applied: []string{"web"}})
	for i := range p.Status.Conditions {
		p.Status.Conditions[i].LastTransitionTime = long
	}
	again := desiredStatus(p, policy.PolicyResult{Applied: []string{"web"}})
	if diff := cmp.Diff(p.Status, again); diff != "" {
		t.Fatalf("the same resolution changed the status, which would write it again (-old +new):\n%s", diff)
	}
	moved := desiredStatus(p, policy.PolicyResult{})
	if c := meta.FindStatusCondition(moved.Conditions, "Ready"); c.LastTransitionTime.Equal(&long) {
		t.Errorf("Ready flipped but kept its lastTransitionTime")
	}
	if c := meta.FindStatusCondition(moved.Conditions, "Conflicted"); !c.LastTransitionTime.Equal(&long) {
		t.Errorf("Conflicted kept its status but lost its lastTransitionTime")
	}
}

func TestConflictMessageBoundsNames(t *testing.T) {
	lost := make([]policy.LostService, 0, 25)
	for i := range 25 {
		lost = append(lost, policy.LostService{Service: fmt.Sprintf("svc-%02d", i), Winner: "a"})
	}
	msg := conflictMessage(lost)
	if !strings.HasPrefix(msg, "services svc-00, svc-01,") || !strings.Contains(msg, "svc-09 and 15 more are governed by older policy \"a\"") {
		t.Fatalf("message = %q", msg)
	}
}

// TestReconcileWritesOnceAndRecordsTransitions runs the reconciler against a fake client: the first pass writes
// the status and records events, a second pass with nothing changed writes and records nothing (no hot loop),
// and a change records only what changed.
func TestReconcileWritesOnceAndRecordsTransitions(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	older := &v1alpha1.ServicePolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "a", CreationTimestamp: metav1.NewTime(time.Unix(100, 0))},
		Spec:       v1alpha1.ServicePolicySpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}},
	}
	newer := &v1alpha1.ServicePolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "b", Generation: 1, CreationTimestamp: metav1.NewTime(time.Unix(200, 0))},
		Spec:       v1alpha1.ServicePolicySpec{Selector: &metav1.LabelSelector{}},
	}
	web := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web", Labels: map[string]string{"app": "web"}}}
	db := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "db"}}
	c := fake.NewClientBuilder().WithScheme(scheme).
		WithObjects(older, newer, web, db).
		WithStatusSubresource(&v1alpha1.ServicePolicy{}).
		Build()
	rec := events.NewFakeRecorder(10)
	r := &ServicePolicyReconciler{Client: c, Recorder: rec}
	ctx := context.Background()
	key := types.NamespacedName{Namespace: "ns", Name: "b"}

	reconcileAndGet := func() *v1alpha1.ServicePolicy {
		t.Helper()
		if _, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: key}); err != nil {
			t.Fatalf("Reconcile: %v", err)
		}
		var p v1alpha1.ServicePolicy
		if err := c.Get(ctx, key, &p); err != nil {
			t.Fatal(err)
		}
		return &p
	}
	drain := func() []string {
		var out []string
		for {
			select {
			case e := <-rec.Events:
				out = append(out, e)
			default:
				return out
			}
		}
	}

	first := reconcileAndGet()
	if diff := cmp.Diff([]string{"db"}, first.Status.Services); diff != "" {
		t.Errorf("services (-want +got):\n%s", diff)
	}
	wantEvents := []string{
		"Normal ServicesApplied Now applies to 1 Service: db",
		`Warning ConflictingPolicy service web is governed by older policy "a"`,
	}
	if diff := cmp.Diff(wantEvents, drain()); diff != "" {
		t.Errorf("events of the first pass (-want +got):\n%s", diff)
	}

	second := reconcileAndGet()
	if second.ResourceVersion != first.ResourceVersion {
		t.Errorf("a pass with nothing changed wrote the status (resourceVersion %s -> %s)", first.ResourceVersion, second.ResourceVersion)
	}
	if got := drain(); len(got) != 0 {
		t.Errorf("a pass with nothing changed recorded %v", got)
	}

	// The older policy goes away: b now governs web too, and the conflict is over.
	if err := c.Delete(ctx, older); err != nil {
		t.Fatal(err)
	}
	third := reconcileAndGet()
	if diff := cmp.Diff([]string{"db", "web"}, third.Status.Services); diff != "" {
		t.Errorf("services (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"Normal ServicesApplied Now applies to 1 Service: web"}, drain()); diff != "" {
		t.Errorf("events after the older policy left (-want +got):\n%s", diff)
	}

	// db goes away.
	if err := c.Delete(ctx, db); err != nil {
		t.Fatal(err)
	}
	reconcileAndGet()
	if diff := cmp.Diff([]string{"Normal ServicesReleased No longer applies to 1 Service: db"}, drain()); diff != "" {
		t.Errorf("events after db left (-want +got):\n%s", diff)
	}

	// A policy that no longer exists is not an error.
	if _, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: types.NamespacedName{Namespace: "ns", Name: "gone"}}); err != nil {
		t.Errorf("Reconcile of a missing policy: %v", err)
	}
}
