package agent

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	lbv1alpha1 "github.com/ipvs-operator/ipvs-operator/api/v1alpha1"
)

// Without the ServicePolicy CRD, a Service's sync must not list policies: through the manager's cache that
// List tries to start an informer for a kind the API server does not serve and re-reads discovery, on every
// sync (measured by make bench: 24% of the agent's CPU at 1,000 Services). Once the watch runs, it lists.
func TestPolicyListsOnlyOnceTheWatchRuns(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := lbv1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	lists := 0
	c := fake.NewClientBuilder().WithScheme(scheme).WithInterceptorFuncs(interceptor.Funcs{
		List: func(ctx context.Context, c client.WithWatch, l client.ObjectList, opts ...client.ListOption) error {
			lists++
			return c.List(ctx, l, opts...)
		},
	}).Build()
	watched := false
	r := &ServiceReconciler{Client: c, policiesWatched: func() bool { return watched }}
	r.init()
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web"}}

	for _, tc := range []struct {
		watched   bool
		wantLists int
	}{{false, 0}, {false, 0}, {true, 1}, {true, 2}} {
		watched = tc.watched
		p, err := r.policy(t.Context(), svc)
		if err != nil || p != nil {
			t.Fatalf("policy() = %v, %v; want the defaults (nil, nil)", p, err)
		}
		if lists != tc.wantLists {
			t.Errorf("watched=%v: %d Lists of ServicePolicies, want %d", tc.watched, lists, tc.wantLists)
		}
	}
}
