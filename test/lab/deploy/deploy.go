// Package deploy installs ipvs-operator into a cluster the way a user does without OLM: the kustomize build
// of config/default, applied server-side. The lab uses it so that its agents are the ones the operator's
// DaemonSet renders, with the RBAC from config/ (not an admin identity).
package deploy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Namespace is where config/default installs the operator, and where it runs the agent DaemonSet.
const Namespace = "ipvs-operator-system"

// AgentDaemonSet is the name of the DaemonSet the operator renders.
const AgentDaemonSet = "ipvs-operator-agent"

// Options say what to install.
type Options struct {
	// RepoRoot is the checkout whose config/ is installed.
	RepoRoot string
	// Kustomize is the kustomize binary (bin/kustomize).
	Kustomize string
	// Image replaces the operator's and the agent's image (RELATED_IMAGE_AGENT).
	Image string
	// OperatorArgs are extra arguments for the operator (for example agent settings).
	OperatorArgs []string
	// Log receives progress lines; nil discards them.
	Log io.Writer
}

// fieldOwner is the server-side apply field manager of this installer.
const fieldOwner = client.FieldOwner("ipvs-operator-installer")

// Install builds config/default with kustomize and applies it: CRDs first (and waits until they are
// served), then everything else.
func Install(ctx context.Context, c client.Client, o Options) error {
	logw := o.Log
	if logw == nil {
		logw = io.Discard
	}
	out, err := exec.CommandContext(ctx, o.Kustomize, "build", filepath.Join(o.RepoRoot, "config", "default")).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return fmt.Errorf("kustomize build config/default: %w: %s", err, ee.Stderr)
		}
		return fmt.Errorf("kustomize build config/default (is %s built? run `make kustomize`): %w", o.Kustomize, err)
	}
	objs, err := decode(out)
	if err != nil {
		return err
	}
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
		if err := waitEstablished(ctx, c, obj.GetName()); err != nil {
			return err
		}
	}
	for _, obj := range rest {
		if obj.GetKind() == "Deployment" && o.Image != "" {
			if err := setOperator(obj, o); err != nil {
				return err
			}
		}
		if err := apply(ctx, c, obj); err != nil {
			return err
		}
	}
	fmt.Fprintf(logw, "installed %d objects from config/default\n", len(objs))
	return nil
}

func decode(manifest []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(manifest), 4096)
	var objs []*unstructured.Unstructured
	for {
		obj := &unstructured.Unstructured{}
		if err := dec.Decode(&obj.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return objs, nil
			}
			return nil, fmt.Errorf("decoding the kustomize output: %w", err)
		}
		if len(obj.Object) > 0 {
			objs = append(objs, obj)
		}
	}
}

func apply(ctx context.Context, c client.Client, obj *unstructured.Unstructured) error {
	obj.SetManagedFields(nil)
	obj.SetResourceVersion("")
	//nolint:staticcheck // client.Apply with unstructured objects is the simplest server-side apply here.
	if err := c.Patch(ctx, obj, client.Apply, fieldOwner, client.ForceOwnership); err != nil {
		return fmt.Errorf("applying %s %s: %w", obj.GetKind(), client.ObjectKeyFromObject(obj), err)
	}
	return nil
}

// setOperator points the operator Deployment's container, and the agent image it renders, at image.
func setOperator(obj *unstructured.Unstructured, o Options) error {
	d := &appsv1.Deployment{}
	if err := runtimeConvert(obj, d); err != nil {
		return err
	}
	for i := range d.Spec.Template.Spec.Containers {
		ctr := &d.Spec.Template.Spec.Containers[i]
		ctr.Image = o.Image
		ctr.Args = append(ctr.Args, o.OperatorArgs...)
		for j := range ctr.Env {
			if ctr.Env[j].Name == "RELATED_IMAGE_AGENT" {
				ctr.Env[j].Value = o.Image
			}
		}
	}
	return runtimeConvertBack(d, obj)
}

func waitEstablished(ctx context.Context, c client.Client, name string) error {
	return wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := c.Get(ctx, client.ObjectKey{Name: name}, crd); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		for _, cond := range crd.Status.Conditions {
			if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	})
}

// WaitAgents waits until the operator's agent DaemonSet has a Ready agent on every one of nodes.
func WaitAgents(ctx context.Context, c client.Client, nodes []string, timeout time.Duration) error {
	var last string
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		pods := &corev1.PodList{}
		if err := c.List(ctx, pods, client.InNamespace(Namespace), client.MatchingLabels{"app.kubernetes.io/name": AgentDaemonSet}); err != nil {
			return false, nil //nolint:nilerr // transient: keep polling
		}
		ready := map[string]bool{}
		for _, p := range pods.Items {
			for _, cond := range p.Status.Conditions {
				if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue && p.DeletionTimestamp == nil {
					ready[p.Spec.NodeName] = true
				}
			}
		}
		last = fmt.Sprintf("%d agent pods, ready on %v", len(pods.Items), ready)
		for _, n := range nodes {
			if !ready[n] {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for a Ready agent on every node (%s): %w", last, err)
	}
	return nil
}
