//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"

	"github.com/ipvs-operator/ipvs-operator/test/install"
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

// installWithKustomize installs config/default as `make deploy` does, through test/install (the lab installs
// with the same code), with the operator Deployment adjusted to this run (kustomizeOptions).
func (c *cluster) installWithKustomize(ctx context.Context) error {
	return install.Kustomize(ctx, c.client, c.kustomizeOptions())
}

// kustomizeOptions adjust the operator Deployment to this run: the image under test (loaded into the nodes,
// so never pulled), the agent scope, and without kube-proxy the API server's address for the operator and
// the agents.
func (c *cluster) kustomizeOptions() install.Options {
	env := map[string]string{"AGENT_SCOPE": c.cfg.Scope}
	if c.cfg.KubeProxyMode == "none" {
		host, port, _ := net.SplitHostPort(c.apiServer)
		env["KUBERNETES_SERVICE_HOST"] = host // client-go's in-cluster config, for the operator itself
		env["KUBERNETES_SERVICE_PORT"] = port
		env[apiServerAddressEnv] = c.apiServer // for the agents
	}
	return install.Options{
		RepoRoot:        c.cfg.RepoRoot,
		Kustomize:       c.cfg.Kustomize,
		Image:           c.cfg.Image,
		ImagePullPolicy: corev1.PullIfNotPresent,
		Env:             env,
		Log:             c.log,
	}
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
	if _, err := c.cmd.Run(ctx, sdkEnv, nil, c.cfg.OperatorSDK, "olm", "install", "--version", c.cfg.OLMVersion, "--timeout", "5m"); err != nil {
		return err
	}
	bundleImage, err := c.pushBundle(ctx)
	if err != nil {
		return err
	}
	if _, err := c.kubectl(ctx, operatorNamespaceManifest, "apply", "-f", "-"); err != nil {
		return err
	}
	_, err = c.cmd.Run(ctx, sdkEnv, nil, c.cfg.OperatorSDK, "run", "bundle", bundleImage,
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
	if err := c.cmd.Stream(ctx, c.cfg.Docker, "build", "-f", filepath.Join(dir, "bundle.Dockerfile"), "-t", image, dir); err != nil {
		return "", err
	}
	return image, c.cmd.Stream(ctx, c.cfg.Docker, "push", image)
}

// waitForAgents waits until the install is ready by the same check as the lab's (test/install.WaitReady): the
// CRD established, the operator Available, and an up-to-date, Ready agent on every node.
func (c *cluster) waitForAgents(ctx context.Context) error {
	if err := install.WaitReady(ctx, c.client, c.nodes, c.cfg.Timeout); err != nil {
		out, _ := c.kubectl(context.WithoutCancel(ctx), "", "get", "pods", "-A", "-o", "wide")
		fmt.Fprintf(c.log, "pods:\n%s\n", out)
		out, _ = c.kubectl(context.WithoutCancel(ctx), "", "logs", "-n", operatorNamespace, "deploy/"+operatorDeployment, "--tail", "100")
		fmt.Fprintf(c.log, "operator log:\n%s\n", out)
		return err
	}
	return nil
}
