package agent

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

// TestSkipUnchanged: the first reconcile after the start-up pass skips a Service only if neither it nor its
// EndpointSlices were written since the pass synced it, no slice came or went, and no ServicePolicy event
// came for its namespace; it asks once.
func TestSkipUnchanged(t *testing.T) {
	key := types.NamespacedName{Namespace: "ns", Name: "web"}
	svcObj := func() *corev1.Service {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web"}}
	}
	sliceObj := func(name string) *discoveryv1.EndpointSlice {
		return &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name,
			Labels: map[string]string{discoveryv1.LabelServiceName: "web"}}, AddressType: discoveryv1.AddressTypeIPv4}
	}
	for _, tt := range []struct {
		name string
		// change runs between the pass's record and the reconcile.
		change func(ctx context.Context, c client.Client, r *ServiceReconciler) error
		// noRecord: the pass did not record the Service.
		noRecord bool
		want     bool
	}{
		{name: "nothing changed", want: true},
		{name: "not recorded", noRecord: true, want: false},
		{name: "Service written", change: func(ctx context.Context, c client.Client, _ *ServiceReconciler) error {
			s := svcObj()
			if err := c.Get(ctx, key, s); err != nil {
				return err
			}
			s.Labels = map[string]string{"x": "y"}
			return c.Update(ctx, s)
		}},
		{name: "Service deleted", change: func(ctx context.Context, c client.Client, _ *ServiceReconciler) error {
			return c.Delete(ctx, svcObj())
		}},
		{name: "a slice written", change: func(ctx context.Context, c client.Client, _ *ServiceReconciler) error {
			s := sliceObj("web-a")
			if err := c.Get(ctx, client.ObjectKeyFromObject(s), s); err != nil {
				return err
			}
			s.Endpoints = []discoveryv1.Endpoint{{Addresses: []string{"10.244.0.9"}}}
			return c.Update(ctx, s)
		}},
		{name: "a slice added", change: func(ctx context.Context, c client.Client, _ *ServiceReconciler) error {
			return c.Create(ctx, sliceObj("web-c"))
		}},
		{name: "a slice deleted", change: func(ctx context.Context, c client.Client, _ *ServiceReconciler) error {
			return c.Delete(ctx, sliceObj("web-b"))
		}},
		{name: "a ServicePolicy event in its namespace", change: func(_ context.Context, _ client.Client, r *ServiceReconciler) error {
			r.policyEpochs.bump("ns")
			return nil
		}},
		{name: "a ServicePolicy event elsewhere", want: true, change: func(_ context.Context, _ client.Client, r *ServiceReconciler) error {
			r.policyEpochs.bump("other")
			return nil
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			scheme := runtime.NewScheme()
			if err := clientgoscheme.AddToScheme(scheme); err != nil {
				t.Fatal(err)
			}
			c := fake.NewClientBuilder().WithScheme(scheme).
				WithObjects(svcObj(), sliceObj("web-a"), sliceObj("web-b")).
				WithIndex(&discoveryv1.EndpointSlice{}, serviceNameField, func(o client.Object) []string {
					return []string{o.GetLabels()[discoveryv1.LabelServiceName]}
				}).Build()
			r := &ServiceReconciler{Client: c}
			if !tt.noRecord {
				// As syncService records it: the policy epoch first, then the objects it read.
				epoch := r.policyEpochs.get("ns")
				svc := svcObj()
				if err := c.Get(ctx, key, svc); err != nil {
					t.Fatal(err)
				}
				slices, err := r.endpointSlices(ctx, key)
				if err != nil {
					t.Fatal(err)
				}
				r.passed.put(key, passRecord{inputs: syncInputs(svc, slices), policyEpoch: epoch})
			}
			if tt.change != nil {
				if err := tt.change(ctx, c, r); err != nil {
					t.Fatal(err)
				}
			}
			if got := r.skipUnchanged(ctx, key); got != tt.want {
				t.Errorf("skipUnchanged = %v, want %v", got, tt.want)
			}
			if r.skipUnchanged(ctx, key) {
				t.Error("skipUnchanged skipped a second reconcile: the record is for the first one only")
			}
		})
	}
}
