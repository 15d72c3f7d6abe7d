package v1alpha1_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
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
		{"health check timeout equal to period", "selector: {}\nhealthCheck: {periodSeconds: 2, timeoutSeconds: 2}", "spec.healthCheck.timeoutSeconds", "must be less than periodSeconds"},
		{"health check default timeout over a 1 s period", "selector: {}\nhealthCheck: {periodSeconds: 1}", "spec.healthCheck.timeoutSeconds", "must be less than periodSeconds"},
		{"health check path with TCP", "selector: {}\nhealthCheck: {protocol: TCP, path: /healthz}", "spec.healthCheck.path", "only for protocol HTTP"},
		{"health check statuses with default TCP", "selector: {}\nhealthCheck: {expectedStatuses: [{min: 200, max: 299}]}", "spec.healthCheck.path", "only for protocol HTTP"},
		{"health check unknown protocol", "selector: {}\nhealthCheck: {protocol: UDP}", "spec.healthCheck.protocol", `supported values: "TCP", "HTTP"`},
		{"health check period 0", "selector: {}\nhealthCheck: {periodSeconds: 0}", "spec.healthCheck.periodSeconds", "greater than or equal to 1"},
		{"health check period over 5 minutes", "selector: {}\nhealthCheck: {periodSeconds: 301}", "spec.healthCheck.periodSeconds", "less than or equal to 300"},
		{"health check threshold over 100", "selector: {}\nhealthCheck: {unhealthyThreshold: 101}", "spec.healthCheck.unhealthyThreshold", "less than or equal to 100"},
		{"health check healthy threshold 0", "selector: {}\nhealthCheck: {healthyThreshold: 0}", "spec.healthCheck.healthyThreshold", "greater than or equal to 1"},
		{"health check relative path", "selector: {}\nhealthCheck: {protocol: HTTP, path: healthz}", "spec.healthCheck.path", "should match '^/'"},
		{"health check status range reversed", "selector: {}\nhealthCheck: {protocol: HTTP, expectedStatuses: [{min: 299, max: 200}]}", "spec.healthCheck.expectedStatuses[0]", "min must not be greater than max"},
		{"slow start with the default rr", "selector: {}\nslowStart: {windowSeconds: 30}", "spec.slowStart", "scheduler rr ignores weights or rehashes on every change: set spec.scheduler to wrr, wlc, sed or nq, or remove spec.slowStart"},
		{"slow start with lc", "selector: {}\nscheduler: lc\nslowStart: {windowSeconds: 30}", "spec.slowStart", "scheduler lc ignores weights"},
		{"slow start with sh", "selector: {}\nscheduler: sh\nslowStart: {windowSeconds: 30}", "spec.slowStart", "scheduler sh ignores weights or rehashes"},
		{"slow start with mh", "selector: {}\nscheduler: mh\nslowStart: {windowSeconds: 30}", "spec.slowStart", "scheduler mh"},
		{"slow start without a window", "selector: {}\nscheduler: wrr\nslowStart: {}", "spec.slowStart.windowSeconds", "Required value"},
		{"slow start window 0", "selector: {}\nscheduler: wrr\nslowStart: {windowSeconds: 0}", "spec.slowStart.windowSeconds", "greater than or equal to 1"},
		{"slow start window over an hour", "selector: {}\nscheduler: wlc\nslowStart: {windowSeconds: 3601}", "spec.slowStart.windowSeconds", "less than or equal to 3600"},
		{"health check status out of range", "selector: {}\nhealthCheck: {protocol: HTTP, expectedStatuses: [{min: 200, max: 600}]}", "spec.healthCheck.expectedStatuses[0].max", "less than or equal to 599"},
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

	for _, s := range lbv1alpha1.WeightedSchedulers {
		p := &lbv1alpha1.ServicePolicy{}
		p.Namespace, p.Name = "default", "slowstart-"+string(s)
		p.Spec = lbv1alpha1.ServicePolicySpec{Selector: &metav1.LabelSelector{}, Scheduler: s,
			SlowStart: &lbv1alpha1.SlowStartSpec{WindowSeconds: 60}}
		if err := apiClient.Create(context.Background(), p); err != nil {
			t.Errorf("slowStart with scheduler %s refused: %v", s, err)
		}
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

// TestHealthCheckDefaultsAndEdits: an empty healthCheck gets every default from the API server; an HTTP one
// is accepted and can be edited; an edit that breaks the CEL rules is refused naming the field, and the
// object keeps its last valid spec.
func TestHealthCheckDefaultsAndEdits(t *testing.T) {
	ctx := context.Background()
	err := applyYAML(t, `apiVersion: lb.ipvs-operator.dev/v1alpha1
kind: ServicePolicy
metadata: {name: hc-defaults}
spec:
  selector: {}
  healthCheck: {}`)
	if err != nil {
		t.Fatalf("an empty healthCheck was refused: %v", err)
	}
	got := &lbv1alpha1.ServicePolicy{}
	if err := apiClient.Get(ctx, client.ObjectKey{Namespace: "default", Name: "hc-defaults"}, got); err != nil {
		t.Fatal(err)
	}
	want := lbv1alpha1.HealthCheckSpec{Protocol: lbv1alpha1.HealthCheckTCP, PeriodSeconds: 5, TimeoutSeconds: 1,
		UnhealthyThreshold: 3, HealthyThreshold: 2}
	if hc := got.Spec.HealthCheck; hc == nil || hc.Protocol != want.Protocol || hc.Port != nil || hc.Path != "" ||
		hc.PeriodSeconds != want.PeriodSeconds || hc.TimeoutSeconds != want.TimeoutSeconds ||
		hc.UnhealthyThreshold != want.UnhealthyThreshold || hc.HealthyThreshold != want.HealthyThreshold {
		t.Errorf("healthCheck defaulted to %+v, want %+v", hc, want)
	}
	if d := (&lbv1alpha1.HealthCheckSpec{}).Defaulted(); !equality.Semantic.DeepEqual(*d, want) {
		t.Errorf("Defaulted() = %+v, want the CRD's defaults %+v", d, want)
	}

	// HTTP with a named port, then edits.
	p := &lbv1alpha1.ServicePolicy{}
	p.Namespace, p.Name = "default", "hc-http"
	p.Spec = lbv1alpha1.ServicePolicySpec{Selector: &metav1.LabelSelector{}, HealthCheck: &lbv1alpha1.HealthCheckSpec{
		Protocol: lbv1alpha1.HealthCheckHTTP, Port: ptr.To(intstr.FromString("http")), Path: "/healthz",
		ExpectedStatuses: []lbv1alpha1.StatusRange{{Min: 200, Max: 204}}, PeriodSeconds: 2, TimeoutSeconds: 1,
	}}
	if err := apiClient.Create(ctx, p); err != nil {
		t.Fatalf("an HTTP health check was refused: %v", err)
	}
	p.Spec.HealthCheck.PeriodSeconds = 10
	p.Spec.HealthCheck.TimeoutSeconds = 9
	if err := apiClient.Update(ctx, p); err != nil {
		t.Fatalf("a valid edit was refused: %v", err)
	}
	bad := p.DeepCopy()
	bad.Spec.HealthCheck.Protocol = lbv1alpha1.HealthCheckTCP // path and expectedStatuses left over
	err = apiClient.Update(ctx, bad)
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "spec.healthCheck.path") {
		t.Fatalf("switching to TCP with a path left: want Invalid naming spec.healthCheck.path, got %v", err)
	}
	bad = p.DeepCopy()
	bad.Spec.HealthCheck.TimeoutSeconds = 10
	err = apiClient.Update(ctx, bad)
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "spec.healthCheck.timeoutSeconds") {
		t.Fatalf("timeout = period: want Invalid naming spec.healthCheck.timeoutSeconds, got %v", err)
	}
	if err := apiClient.Get(ctx, client.ObjectKeyFromObject(p), got); err != nil {
		t.Fatal(err)
	}
	if hc := got.Spec.HealthCheck; hc.PeriodSeconds != 10 || hc.TimeoutSeconds != 9 || hc.Protocol != lbv1alpha1.HealthCheckHTTP {
		t.Errorf("after refused edits the policy holds %+v, want the last valid one", hc)
	}
	// Removing the health check is an edit like any other.
	got.Spec.HealthCheck = nil
	if err := apiClient.Update(ctx, got); err != nil {
		t.Fatalf("removing healthCheck was refused: %v", err)
	}
}
