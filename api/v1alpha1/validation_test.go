package v1alpha1_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	lbv1alpha1 "github.com/ipvs-operator/ipvs-operator/api/v1alpha1"
)

// apiClient talks to a real kube-apiserver (envtest) with the generated CRD installed, so these tests prove
// what `kubectl apply` of a bad policy gets back.
var apiClient client.Client

func TestMain(m *testing.M) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		// Fail, don't skip: validation is only proven against a real API server. `make test` sets this.
		println("KUBEBUILDER_ASSETS is not set: run `make envtest` and use `make test`, or export KUBEBUILDER_ASSETS=bin/k8s/1.37.1")
		os.Exit(1)
	}
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := env.Start()
	if err != nil {
		println("starting envtest:", err.Error())
		os.Exit(1)
	}
	scheme := runtime.NewScheme()
	if err := lbv1alpha1.AddToScheme(scheme); err != nil {
		panic(err)
	}
	apiClient, err = client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		panic(err)
	}
	code := m.Run()
	_ = env.Stop()
	os.Exit(code)
}

// applyYAML creates a ServicePolicy from YAML as a user would write it (unstructured, so values the Go types
// cannot hold, like a string timeout, reach the API server too).
func applyYAML(t *testing.T, doc string) error {
	t.Helper()
	obj := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(doc), &obj.Object); err != nil {
		t.Fatalf("bad test YAML: %v", err)
	}
	obj.SetNamespace("default")
	return apiClient.Create(context.Background(), obj)
}

func TestValidationRefusesBadPolicies(t *testing.T) {
	cases := []struct {
		name string
		spec string
		// wantField must appear in the API server's message: it names the field a user has to fix.
		wantField string
		wantText  string
	}{
		{"unknown scheduler", "scheduler: fastest\nselector: {}", "spec.scheduler", `supported values: "rr", "wrr", "lc"`},
		{"negative drain timeout", "selector: {}\ndrain: {timeoutSeconds: -1}", "spec.drain.timeoutSeconds", "should be greater than or equal to 0"},
		{"drain timeout over an hour", "selector: {}\ndrain: {timeoutSeconds: 3601}", "spec.drain.timeoutSeconds", "should be less than or equal to 3600"},
		{"missing selector", "scheduler: lc", "spec.selector", "Required value"},
		{"bad selector operator", "selector: {matchExpressions: [{key: app, operator: Equals, values: [web]}]}", "spec.selector.matchExpressions", "must be one of In, NotIn, Exists, DoesNotExist"},
		{"In without values", "selector: {matchExpressions: [{key: app, operator: In}]}", "spec.selector.matchExpressions", "must be non-empty for In and NotIn"},
		{"Exists with values", "selector: {matchExpressions: [{key: app, operator: Exists, values: [x]}]}", "spec.selector.matchExpressions", "empty for Exists and DoesNotExist"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			doc := "apiVersion: lb.ipvs-operator.dev/v1alpha1\nkind: ServicePolicy\nmetadata: {name: bad-" +
				strings.ReplaceAll(strings.ToLower(tc.name), " ", "-") + "}\nspec:\n  " +
				strings.ReplaceAll(tc.spec, "\n", "\n  ")
			err := applyYAML(t, doc)
			if !apierrors.IsInvalid(err) {
				t.Fatalf("case %d: want the API server to refuse it as Invalid, got %v", i, err)
			}
			for _, want := range []string{tc.wantField, tc.wantText} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("message %q does not mention %q", err.Error(), want)
				}
			}
		})
	}
}

func TestValidationAcceptsAndDefaults(t *testing.T) {
	err := applyYAML(t, `apiVersion: lb.ipvs-operator.dev/v1alpha1
kind: ServicePolicy
metadata: {name: defaults}
spec:
  selector: {matchLabels: {app: web}}`)
	if err != nil {
		t.Fatalf("a minimal policy was refused: %v", err)
	}
	got := &lbv1alpha1.ServicePolicy{}
	if err := apiClient.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: "defaults"}, got); err != nil {
		t.Fatal(err)
	}
	if got.Spec.Scheduler != lbv1alpha1.SchedulerRoundRobin {
		t.Errorf("scheduler defaulted to %q, want rr", got.Spec.Scheduler)
	}

	for _, s := range lbv1alpha1.Schedulers {
		p := &lbv1alpha1.ServicePolicy{}
		p.Namespace, p.Name = "default", "sched-"+string(s)
		p.Spec = lbv1alpha1.ServicePolicySpec{
			Selector:  &metav1.LabelSelector{},
			Scheduler: s,
			Drain:     &lbv1alpha1.DrainSpec{TimeoutSeconds: ptr.To[int32](0)},
		}
		if err := apiClient.Create(context.Background(), p); err != nil {
			t.Errorf("scheduler %s refused: %v", s, err)
		}
	}
}
