//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// apiServerAddressEnv is the operator's environment variable that gives the agents the API server's address
// (host:port) when they cannot use the `kubernetes` Service (controllers/operator.AgentConfig.APIServerAddress).
const apiServerAddressEnv = "AGENT_APISERVER_ADDRESS"

func (c *cluster) install(ctx context.Context) error {
	if c.cfg.OLM {
		return c.installWithOLM(ctx)
	}
	return c.installWithKustomize(ctx)
}

// installWithKustomize applies `kustomize build config/default`, as `make deploy` does, with the Deployment
// adjusted to this run: the image under test, the agent scope, and without kube-proxy the API server's address
// for the operator and the agents.
func (c *cluster) installWithKustomize(ctx context.Context) error {
	manifests, err := run(ctx, nil, nil, c.cfg.Kustomize, "build", filepath.Join(c.cfg.RepoRoot, "config", "default"))
	if err != nil {
		return err
	}
	adjusted, err := c.adjustManifests(manifests)
	if err != nil {
		return err
	}
	_, err = c.kubectl(ctx, adjusted, "apply", "--server-side", "--force-conflicts", "-f", "-")
	return err
}

// adjustManifests rewrites the operator Deployment in a multi-document YAML stream.
func (c *cluster) adjustManifests(manifests string) (string, error) {
	reader := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(manifests)))
	var out bytes.Buffer
	found := false
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", err
		}
		var meta struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			return "", err
		}
		if meta.Kind == "Deployment" && meta.Metadata.Name == operatorDeployment {
			if doc, err = c.adjustDeployment(doc); err != nil {
				return "", err
			}
			found = true
		}
		out.WriteString("---\n")
		out.Write(doc)
	}
	if !found {
		return "", fmt.Errorf("config/default has no Deployment %s", operatorDeployment)
	}
	return out.String(), nil
}

func (c *cluster) adjustDeployment(doc []byte) ([]byte, error) {
	var d appsv1.Deployment
	if err := yaml.UnmarshalStrict(doc, &d); err != nil {
		return nil, err
	}
	env := map[string]string{
		"RELATED_IMAGE_AGENT": c.cfg.Image,
		"AGENT_SCOPE":         c.cfg.Scope,
	}
	if c.cfg.KubeProxyMode == "none" {
		host, port, _ := net.SplitHostPort(c.apiServer)
		env["KUBERNETES_SERVICE_HOST"] = host // client-go's in-cluster config, for the operator itself
		env["KUBERNETES_SERVICE_PORT"] = port
		env[apiServerAddressEnv] = c.apiServer // for the agents
	}
	for i := range d.Spec.Template.Spec.Containers {
		ctr := &d.Spec.Template.Spec.Containers[i]
		if ctr.Name != operatorContainer {
			continue
		}
		ctr.Image = c.cfg.Image
		ctr.ImagePullPolicy = corev1.PullIfNotPresent
		for name, value := range env {
			ctr.Env = setEnv(ctr.Env, name, value)
		}
		return yaml.Marshal(&d)
	}
	return nil, fmt.Errorf("deployment %s has no container %s", operatorDeployment, operatorContainer)
}

func setEnv(env []corev1.EnvVar, name, value string) []corev1.EnvVar {
	for i := range env {
		if env[i].Name == name {
			env[i] = corev1.EnvVar{Name: name, Value: value}
			return env
		}
	}
	return append(env, corev1.EnvVar{Name: name, Value: value})
}

// operatorNamespaceManifest is the install namespace the OLM path creates first. It must admit privileged pods,
// as config/manager's Namespace and the CSV's suggested-namespace-template do.
const operatorNamespaceManifest = `apiVersion: v1
kind: Namespace
metadata:
  name: ` + operatorNamespace + `
  labels:
    pod-security.kubernetes.io/enforce: privileged
    pod-security.kubernetes.io/audit: privileged
    pod-security.kubernetes.io/warn: privileged
`

// installWithOLM installs OLM, builds the bundle image from the committed bundle/ (with the CSV's image
// rewritten to the image under test), pushes it to the local registry and runs it with `operator-sdk run bundle`
// in AllNamespaces mode, the only one the CSV supports.
func (c *cluster) installWithOLM(ctx context.Context) error {
	sdkEnv := []string{"KUBECONFIG=" + c.kubeconfig}
	if _, err := run(ctx, sdkEnv, nil, c.cfg.OperatorSDK, "olm", "install", "--version", c.cfg.OLMVersion, "--timeout", "5m"); err != nil {
		return err
	}
	bundleImage, err := c.pushBundle(ctx)
	if err != nil {
		return err
	}
	if _, err := c.kubectl(ctx, operatorNamespaceManifest, "apply", "-f", "-"); err != nil {
		return err
	}
	_, err = run(ctx, sdkEnv, nil, c.cfg.OperatorSDK, "run", "bundle", bundleImage,
		"--namespace", operatorNamespace, "--install-mode", "AllNamespaces", "--use-http", "--timeout", "10m")
	return err
}

// pushBundle builds the bundle image and pushes it to the local registry; it returns the image's name as the
// host (and, through containerd's registry host configuration, the nodes) know it.
func (c *cluster) pushBundle(ctx context.Context) (string, error) {
	dir := filepath.Join(c.tmp, "bundle")
	if err := os.CopyFS(dir, os.DirFS(filepath.Join(c.cfg.RepoRoot, "bundle"))); err != nil {
		return "", err
	}
	manifests := filepath.Join(dir, "manifests")
	entries, err := os.ReadDir(manifests)
	if err != nil {
		return "", err
	}
	for _, e := range entries {
		p := filepath.Join(manifests, e.Name())
		b, err := os.ReadFile(p)
		if err != nil {
			return "", err
		}
		if err := os.WriteFile(p, bytes.ReplaceAll(b, []byte(defaultImage), []byte(c.cfg.Image)), 0o644); err != nil {
			return "", err
		}
	}
	image := c.registryHost + "/ipvs-operator-bundle:e2e"
	if err := runStreaming(ctx, c.cfg.Docker, "build", "-f", filepath.Join(dir, "bundle.Dockerfile"), "-t", image, dir); err != nil {
		return "", err
	}
	return image, runStreaming(ctx, c.cfg.Docker, "push", image)
}

// waitForAgents waits until the operator has rolled out an up-to-date, ready agent on every node.
func (c *cluster) waitForAgents(ctx context.Context) error {
	var last string
	err := wait.PollUntilContextTimeout(ctx, 2*time.Second, c.cfg.Timeout, true, func(ctx context.Context) (bool, error) {
		var ds appsv1.DaemonSet
		if err := c.client.Get(ctx, types.NamespacedName{Namespace: operatorNamespace, Name: agentDaemonSet}, &ds); err != nil {
			last = err.Error()
			return false, nil
		}
		s := ds.Status
		last = fmt.Sprintf("generation %d observed %d, desired %d, updated %d, ready %d, nodes %d",
			ds.Generation, s.ObservedGeneration, s.DesiredNumberScheduled, s.UpdatedNumberScheduled, s.NumberReady, len(c.nodes))
		return s.ObservedGeneration >= ds.Generation && s.DesiredNumberScheduled == int32(len(c.nodes)) &&
			s.UpdatedNumberScheduled == s.DesiredNumberScheduled && s.NumberReady == s.DesiredNumberScheduled, nil
	})
	if err != nil {
		out, _ := c.kubectl(context.WithoutCancel(ctx), "", "get", "pods", "-A", "-o", "wide")
		fmt.Fprintf(GinkgoWriter, "pods:\n%s\n", out)
		out, _ = c.kubectl(context.WithoutCancel(ctx), "", "logs", "-n", operatorNamespace, "deploy/"+operatorDeployment, "--tail", "100")
		fmt.Fprintf(GinkgoWriter, "operator log:\n%s\n", out)
		return fmt.Errorf("agent DaemonSet %s/%s not ready (%s): %w", operatorNamespace, agentDaemonSet, last, err)
	}
	return nil
}
