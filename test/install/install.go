// Package install puts ipvs-operator into a cluster the way a user does without OLM (`make deploy`: the
// kustomize build of config/default, applied server-side) and waits until the install is ready. The lab
// (test/lab/dataplane, the demo) and the kind suite (test/e2e) both install with Kustomize and wait with
// WaitReady, so the two suites prove the same install path and the same meaning of "ready"; the kind suite's
// OLM path installs otherwise but waits with the same WaitReady.
package install

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"slices"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The names config/default installs under (its namespace and namePrefix; the CSV uses the same ones) and the
// DaemonSet the operator renders (controllers/operator.AgentName).
const (
	Namespace          = "ipvs-operator-system"
	OperatorDeployment = "ipvs-operator-controller-manager"
	OperatorContainer  = "manager"
	AgentDaemonSet     = "ipvs-operator-agent"
	// AgentImageEnv is the operator's environment variable naming the agent's image (OLM mirrors
	// RELATED_IMAGE_* variables).
	AgentImageEnv = "RELATED_IMAGE_AGENT"
	// ServicePolicyCRD is the CRD config/ installs.
	ServicePolicyCRD = "servicepolicies.lb.ipvs-operator.dev"
	// agentAppLabel selects the agent's pods (the DaemonSet's selector).
	agentAppLabel = "app.kubernetes.io/name"
)

// Options say what to install.
type Options struct {
	// RepoRoot is the checkout whose config/default is installed.
	RepoRoot string
	// Kustomize is the kustomize binary (bin/kustomize).
	Kustomize string
	// Image, when set, replaces the operator's image and the agent's (AgentImageEnv).
	Image string
	// ImagePullPolicy, when set, replaces the operator container's (kind loads images into the nodes: use
	// IfNotPresent there).
	ImagePullPolicy corev1.PullPolicy
	// Args are appended to the operator's arguments (for example --agent-audit-period=10s).
	Args []string
	// Env is set on the operator's container, replacing variables of the same name (AGENT_SCOPE, ...).
	Env map[string]string
	// Log receives progress lines; nil discards them.
	Log io.Writer
}

// fieldOwner is the server-side apply field manager of this installer.
const fieldOwner = client.FieldOwner("ipvs-operator-installer")

// Kustomize builds config/default, adjusts the operator Deployment as o says, and applies everything
// server-side: the CRDs first, waiting until they are established, then the rest.
func Kustomize(ctx context.Context, c client.Client, o Options) error {
	objs, err := Manifests(ctx, o)
	if err != nil {
		return err
	}
	if err := Apply(ctx, c, objs); err != nil {
		return err
	}
	if o.Log != nil {
		fmt.Fprintf(o.Log, "installed %d objects from config/default\n", len(objs))
	}
	return nil
}

// Manifests returns `kustomize build config/default` with the operator Deployment adjusted (see Adjust).
func Manifests(ctx context.Context, o Options) ([]*unstructured.Unstructured, error) {
	out, err := exec.CommandContext(ctx, o.Kustomize, "build", filepath.Join(o.RepoRoot, "config", "default")).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return nil, fmt.Errorf("kustomize build config/default: %w: %s", err, ee.Stderr)
		}
		return nil, fmt.Errorf("kustomize build config/default (is %s built? run `make kustomize`): %w", o.Kustomize, err)
	}
	objs, err := Decode(out)
	if err != nil {
		return nil, err
	}
	return objs, Adjust(objs, o)
}

// Decode splits a multi-document YAML (or JSON) stream into objects, leaving out empty documents.
func Decode(manifest []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(manifest), 4096)
	var objs []*unstructured.Unstructured
	for {
		obj := &unstructured.Unstructured{}
		if err := dec.Decode(&obj.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return objs, nil
			}
			return nil, fmt.Errorf("decoding the manifests: %w", err)
		}
		if len(obj.Object) > 0 {
			objs = append(objs, obj)
		}
	}
}

// Adjust rewrites the operator Deployment among objs in place: the image of its manager container and the
// agent's (AgentImageEnv), the pull policy, extra arguments and environment. It fails if there is no such
// Deployment or container, so a rename in config/ cannot make an install silently run the wrong image.
func Adjust(objs []*unstructured.Unstructured, o Options) error {
	for _, obj := range objs {
		if obj.GetKind() != "Deployment" || obj.GetName() != OperatorDeployment {
			continue
		}
		var d appsv1.Deployment
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, &d); err != nil {
			return fmt.Errorf("reading Deployment %s: %w", OperatorDeployment, err)
		}
		i := slices.IndexFunc(d.Spec.Template.Spec.Containers, func(c corev1.Container) bool { return c.Name == OperatorContainer })
		if i < 0 {
			return fmt.Errorf("deployment %s has no container %s", OperatorDeployment, OperatorContainer)
		}
		ctr := &d.Spec.Template.Spec.Containers[i]
		env := map[string]string{}
		if o.Image != "" {
			ctr.Image = o.Image
			env[AgentImageEnv] = o.Image
		}
		if o.ImagePullPolicy != "" {
			ctr.ImagePullPolicy = o.ImagePullPolicy
		}
		ctr.Args = append(ctr.Args, o.Args...)
		for k, v := range o.Env {
			env[k] = v
		}
		for _, name := range sortedKeys(env) {
			ctr.Env = setEnv(ctr.Env, name, env[name])
		}
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&d)
		if err != nil {
			return fmt.Errorf("writing Deployment %s: %w", OperatorDeployment, err)
		}
		obj.Object = m
		return nil
	}
	return fmt.Errorf("the manifests have no Deployment %s", OperatorDeployment)
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// setEnv sets name=value in env, replacing a variable of that name (also one read from a field or secret).
func setEnv(env []corev1.EnvVar, name, value string) []corev1.EnvVar {
	for i := range env {
		if env[i].Name == name {
			env[i] = corev1.EnvVar{Name: name, Value: value}
			return env
		}
	}
	return append(env, corev1.EnvVar{Name: name, Value: value})
}

// Apply applies objs server-side with forced ownership (as `kubectl apply --server-side --force-conflicts`):
// CustomResourceDefinitions first, waiting until each is established so the objects after them can use
// their kinds, then the rest in order.
func Apply(ctx context.Context, c client.Client, objs []*unstructured.Unstructured) error {
	var crds, rest []*unstructured.Unstructured
	for _, obj := range objs {
		if obj.GetKind() == "CustomResourceDefinition" {
			crds = append(crds, obj)
		} else {
			rest = append(rest, obj)
		}
	}
	for _, obj := range crds {
		if err := apply(ctx, c, obj); err != nil {
			return err
		}
	}
	for _, obj := range crds {
		if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			msg, err := crdEstablished(ctx, c, obj.GetName())
			return msg == "", err
		}); err != nil {
			return fmt.Errorf("waiting for CRD %s to be established: %w", obj.GetName(), err)
		}
	}
	for _, obj := range rest {
		if err := apply(ctx, c, obj); err != nil {
			return err
		}
	}
	return nil
}

func apply(ctx context.Context, c client.Client, obj *unstructured.Unstructured) error {
	obj = obj.DeepCopy()
	obj.SetManagedFields(nil)
	obj.SetResourceVersion("")
	//nolint:staticcheck // client.Apply with unstructured objects is the simplest server-side apply here.
	if err := c.Patch(ctx, obj, client.Apply, fieldOwner, client.ForceOwnership); err != nil {
		return fmt.Errorf("applying %s %s: %w", obj.GetKind(), client.ObjectKeyFromObject(obj), err)
	}
	return nil
}
