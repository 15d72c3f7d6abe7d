package install

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

const manifest = `apiVersion: v1
kind: Namespace
metadata: {name: ipvs-operator-system}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: ipvs-operator-controller-manager, namespace: ipvs-operator-system}
spec:
  selector: {matchLabels: {app: x}}
  template:
    metadata: {labels: {app: x}}
    spec:
      containers:
      - name: sidecar
        image: other:1
      - name: manager
        image: ghcr.io/ipvs-operator/ipvs-operator:v0.1.0
        args: [--leader-elect]
        env:
        - {name: RELATED_IMAGE_AGENT, value: ghcr.io/ipvs-operator/ipvs-operator:v0.1.0}
        - name: AGENT_SCOPE
          valueFrom: {configMapKeyRef: {name: c, key: k}}
---
`

func TestAdjust(t *testing.T) {
	objs, err := Decode([]byte(manifest))
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 2 {
		t.Fatalf("decoded %d objects, want 2 (the empty document left out)", len(objs))
	}
	err = Adjust(objs, Options{
		Image: "example.test/ipvs-operator:e2e", ImagePullPolicy: corev1.PullIfNotPresent,
		Args: []string{"--agent-audit-period=10s"},
		Env:  map[string]string{"AGENT_SCOPE": "all", "KUBERNETES_SERVICE_HOST": "172.18.0.2"},
	})
	if err != nil {
		t.Fatal(err)
	}
	var d appsv1.Deployment
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(objs[1].Object, &d); err != nil {
		t.Fatal(err)
	}
	side, mgr := d.Spec.Template.Spec.Containers[0], d.Spec.Template.Spec.Containers[1]
	if side.Image != "other:1" {
		t.Errorf("another container's image changed: %s", side.Image)
	}
	if mgr.Image != "example.test/ipvs-operator:e2e" || mgr.ImagePullPolicy != corev1.PullIfNotPresent {
		t.Errorf("manager image %s, pull policy %s", mgr.Image, mgr.ImagePullPolicy)
	}
	if want := []string{"--leader-elect", "--agent-audit-period=10s"}; !slices.Equal(mgr.Args, want) {
		t.Errorf("args %v, want %v", mgr.Args, want)
	}
	want := []corev1.EnvVar{
		{Name: AgentImageEnv, Value: "example.test/ipvs-operator:e2e"},
		{Name: "AGENT_SCOPE", Value: "all"}, // replaces the valueFrom
		{Name: "KUBERNETES_SERVICE_HOST", Value: "172.18.0.2"},
	}
	if !slices.Equal(mgr.Env, want) {
		t.Errorf("env %+v, want %+v", mgr.Env, want)
	}

	// Without the Deployment or its container, Adjust fails rather than installing the wrong image.
	if err := Adjust(objs[:1], Options{}); err == nil || !strings.Contains(err.Error(), OperatorDeployment) {
		t.Errorf("without the Deployment: %v", err)
	}
	d.Spec.Template.Spec.Containers = d.Spec.Template.Spec.Containers[:1]
	m, _ := runtime.DefaultUnstructuredConverter.ToUnstructured(&d)
	objs[1].Object = m
	if err := Adjust(objs, Options{}); err == nil || !strings.Contains(err.Error(), OperatorContainer) {
		t.Errorf("without the manager container: %v", err)
	}
}

func TestNotReady(t *testing.T) {
	nodes := []string{"node-a", "node-b"}
	crd := func(established bool) *apiextensionsv1.CustomResourceDefinition {
		s := apiextensionsv1.ConditionFalse
		if established {
			s = apiextensionsv1.ConditionTrue
		}
		return &apiextensionsv1.CustomResourceDefinition{Status: apiextensionsv1.CustomResourceDefinitionStatus{
			Conditions: []apiextensionsv1.CustomResourceDefinitionCondition{{Type: apiextensionsv1.Established, Status: s}},
		}}
	}
	operator := func(edit func(*appsv1.Deployment)) *appsv1.Deployment {
		d := &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Generation: 2},
			Spec:       appsv1.DeploymentSpec{Replicas: ptr.To[int32](1)},
			Status: appsv1.DeploymentStatus{ObservedGeneration: 2, Replicas: 1, UpdatedReplicas: 1, AvailableReplicas: 1,
				Conditions: []appsv1.DeploymentCondition{{Type: appsv1.DeploymentAvailable, Status: corev1.ConditionTrue}}},
		}
		if edit != nil {
			edit(d)
		}
		return d
	}
	agents := func(edit func(*appsv1.DaemonSetStatus)) *appsv1.DaemonSet {
		ds := &appsv1.DaemonSet{
			ObjectMeta: metav1.ObjectMeta{Generation: 3},
			Status: appsv1.DaemonSetStatus{ObservedGeneration: 3, DesiredNumberScheduled: 2, UpdatedNumberScheduled: 2,
				NumberReady: 2, NumberAvailable: 2},
		}
		if edit != nil {
			edit(&ds.Status)
		}
		return ds
	}
	pod := func(node string, ready bool, deleting bool) corev1.Pod {
		p := corev1.Pod{Spec: corev1.PodSpec{NodeName: node}}
		s := corev1.ConditionFalse
		if ready {
			s = corev1.ConditionTrue
		}
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: s}}
		if deleting {
			p.DeletionTimestamp = &metav1.Time{Time: time.Unix(1, 0)}
		}
		return p
	}
	readyPods := []corev1.Pod{pod("node-a", true, false), pod("node-b", true, false)}
	all := Observed{CRD: crd(true), Operator: operator(nil), Agents: agents(nil), AgentPods: readyPods}

	with := func(edit func(*Observed)) Observed { o := all; edit(&o); return o }
	for _, tc := range []struct {
		name string
		o    Observed
		want string // substring of the answer; "" means ready
	}{
		{"everything ready", all, ""},
		{"nothing installed", Observed{}, "CRD " + ServicePolicyCRD + " absent; operator: Deployment " + OperatorDeployment +
			" absent; agent DaemonSet: DaemonSet " + AgentDaemonSet + " absent (the operator renders it); no Ready agent on node-a, node-b"},
		{"CRD not established", with(func(o *Observed) { o.CRD = crd(false) }), "not established"},
		{"operator generation not observed", with(func(o *Observed) {
			o.Operator = operator(func(d *appsv1.Deployment) { d.Status.ObservedGeneration = 1 })
		}), "operator: generation 2 not observed yet"},
		{"operator old replica still there", with(func(o *Observed) {
			o.Operator = operator(func(d *appsv1.Deployment) { d.Status.Replicas = 2 })
		}), "1 old replicas pending termination"},
		{"operator not available", with(func(o *Observed) {
			o.Operator = operator(func(d *appsv1.Deployment) {
				d.Status.Conditions[0].Status, d.Status.Conditions[0].Message = corev1.ConditionFalse, "MinimumReplicasUnavailable"
			})
		}), "operator: not Available: MinimumReplicasUnavailable"},
		{"operator without conditions", with(func(o *Observed) {
			o.Operator = operator(func(d *appsv1.Deployment) { d.Status.Conditions = nil })
		}), "no Available condition"},
		{"agents on fewer nodes", with(func(o *Observed) {
			o.Agents = agents(func(s *appsv1.DaemonSetStatus) { s.DesiredNumberScheduled = 1 })
		}), "scheduled on 1 nodes, want 2"},
		{"agents rolling", with(func(o *Observed) {
			o.Agents = agents(func(s *appsv1.DaemonSetStatus) { s.UpdatedNumberScheduled = 1 })
		}), "1 of 2 agents updated"},
		{"agents not available", with(func(o *Observed) {
			o.Agents = agents(func(s *appsv1.DaemonSetStatus) { s.NumberAvailable = 1 })
		}), "1 of 2 agents available"},
		{"one agent not ready", with(func(o *Observed) {
			o.AgentPods = []corev1.Pod{pod("node-a", true, false), pod("node-b", false, false)}
		}), "no Ready agent on node-b"},
		{"the ready agent is being deleted", with(func(o *Observed) {
			o.AgentPods = []corev1.Pod{pod("node-a", true, false), pod("node-b", true, true), pod("node-b", false, false)}
		}), "no Ready agent on node-b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := NotReady(tc.o, nodes)
			if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
				t.Errorf("NotReady = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestKustomizeAgainstAPIServer installs the real config/default into a real API server (envtest): the CRD
// is established before the rest is applied, the Deployment carries the adjustments, a second install is a
// no-op, and the readiness check names what a cluster without controllers and nodes lacks.
func TestKustomizeAgainstAPIServer(t *testing.T) {
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		t.Fatal("KUBEBUILDER_ASSETS is not set (make test-unit sets it; make envtest builds bin/k8s)")
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	kustomize := filepath.Join(root, "bin", "kustomize")
	if _, err := exec.LookPath(kustomize); err != nil {
		t.Fatalf("no %s (make kustomize builds it): %v", kustomize, err)
	}
	env := &envtest.Environment{}
	cfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil { // no apiextensions: Observe must not need it
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	o := Options{RepoRoot: root, Kustomize: kustomize, Image: "example.test/ipvs-operator:lab", Args: []string{"--agent-audit-period=10s"}}
	for i := range 2 { // the second install re-applies the same objects
		if err := Kustomize(ctx, c, o); err != nil {
			t.Fatalf("install %d: %v", i+1, err)
		}
	}
	var d appsv1.Deployment
	if err := c.Get(ctx, client.ObjectKey{Namespace: Namespace, Name: OperatorDeployment}, &d); err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(d.Spec.Template.Spec.Containers, func(c corev1.Container) bool { return c.Name == OperatorContainer })
	if i < 0 {
		t.Fatalf("no %s container in %s", OperatorContainer, OperatorDeployment)
	}
	mgr := d.Spec.Template.Spec.Containers[i]
	if mgr.Image != o.Image || !slices.Contains(mgr.Env, corev1.EnvVar{Name: AgentImageEnv, Value: o.Image}) {
		t.Errorf("manager image %s, env %+v", mgr.Image, mgr.Env)
	}
	if n := slices.Index(mgr.Args, "--agent-audit-period=10s"); n < 0 || slices.Index(mgr.Args[n+1:], "--agent-audit-period=10s") >= 0 {
		t.Errorf("args %v: want --agent-audit-period=10s once after two installs", mgr.Args)
	}

	obs, err := Observe(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	got := NotReady(obs, []string{"node-a"})
	// envtest runs no controllers: the CRD is established, nothing else becomes ready.
	for _, want := range []string{"operator: generation 1 not observed yet (0)", "agent DaemonSet: DaemonSet " + AgentDaemonSet + " absent", "no Ready agent on node-a"} {
		if !strings.Contains(got, want) {
			t.Errorf("NotReady = %q, want it to say %q", got, want)
		}
	}
	if strings.Contains(got, "CRD") {
		t.Errorf("NotReady = %q: the CRD was established by the install", got)
	}
	short, cancelShort := context.WithTimeout(ctx, 3*time.Second)
	defer cancelShort()
	if err := WaitReady(short, c, []string{"node-a"}, time.Second); err == nil || !strings.Contains(err.Error(), "operator: generation") {
		t.Errorf("WaitReady = %v, want a timeout naming the operator", err)
	}
}
