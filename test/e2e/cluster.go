//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// cluster is a kind cluster with the product installed, plus its helper containers.
type cluster struct {
	cfg        config
	tmp        string
	kubeconfig string
	client     client.Client
	nodes      []string
	// apiServer is the control-plane node's address on the kind network (host:port). Without kube-proxy the
	// operator and the agents reach the API server here instead of through the `kubernetes` Service, which the
	// agents themselves serve.
	apiServer string
	// outside is the helper container that plays the host on the nodes' network outside the cluster.
	outside string
	// registry is the local image registry container the OLM path pushes the bundle image to, and
	// registryHost its address as the host knows it (127.0.0.1:<port>); the nodes' containerd maps that name
	// to the container.
	registry, registryHost string
	created                bool
}

// setUp makes a ready cluster: the image built and loaded, the operator installed, an agent ready on every
// node. It returns the cluster even on error, so that tearDown can clean up what was made.
func setUp(ctx context.Context, cfg config) (*cluster, error) {
	c := &cluster{cfg: cfg, outside: cfg.Cluster + "-outside"}
	var err error
	if c.tmp, err = os.MkdirTemp("", "ipvs-operator-e2e-"); err != nil {
		return c, err
	}
	steps := []struct {
		name string
		fn   func(context.Context) error
	}{
		{"check tools", c.checkTools},
		{"build the image", c.buildImage},
		{"start the local registry", c.startRegistry},
		{"create the kind cluster", c.createCluster},
		{"connect to the cluster", c.connect},
		{"load the image into the nodes", c.loadImage},
		{"start the outside host", c.startOutside},
		{"install node tools", c.installNodeTools},
		{"install the operator", c.install},
		{"wait for the agents", c.waitForAgents},
	}
	for _, s := range steps {
		By(s.name)
		t0 := time.Now()
		if err := s.fn(ctx); err != nil {
			return c, fmt.Errorf("%s: %w", s.name, err)
		}
		fmt.Fprintf(GinkgoWriter, "%s: done in %s\n", s.name, time.Since(t0).Round(time.Second))
	}
	return c, nil
}

func (c *cluster) checkTools(context.Context) error {
	tools := []string{c.cfg.Docker, c.cfg.Kind, c.cfg.Kubectl, c.cfg.Kustomize}
	if c.cfg.OLM {
		tools = append(tools, c.cfg.OperatorSDK)
	}
	var errs []error
	for _, t := range tools {
		if _, err := exec.LookPath(t); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// buildImage builds the product image (IMG) and the test image (E2E_LAB_IMG) from their Dockerfile targets.
func (c *cluster) buildImage(ctx context.Context) error {
	for _, img := range []struct{ target, ref string }{{productTarget, c.cfg.Image}, {labTarget, c.cfg.LabImage}} {
		if c.cfg.SkipBuild {
			if _, err := run(ctx, nil, nil, c.cfg.Docker, "image", "inspect", img.ref); err != nil {
				return err
			}
			continue
		}
		if err := runStreaming(ctx, c.cfg.Docker, "build", "--target", img.target, "-t", img.ref, c.cfg.RepoRoot); err != nil {
			return err
		}
	}
	return nil
}

func (c *cluster) exists(ctx context.Context) (bool, error) {
	out, err := run(ctx, nil, nil, c.cfg.Kind, "get", "clusters")
	if err != nil {
		return false, err
	}
	return slices.Contains(strings.Fields(out), c.cfg.Cluster), nil
}

// kindConfig is the cluster: one control plane and E2E_WORKERS workers, kube-proxy as configured. With the OLM
// path, containerd reads registry host configuration from /etc/containerd/certs.d, where startRegistry's
// address is mapped to the registry container.
func (c *cluster) kindConfig() string {
	var b strings.Builder
	b.WriteString("kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\n")
	fmt.Fprintf(&b, "networking:\n  kubeProxyMode: %q\n", c.cfg.KubeProxyMode)
	b.WriteString("nodes:\n- role: control-plane\n")
	for range c.cfg.Workers {
		b.WriteString("- role: worker\n")
	}
	if c.registry != "" {
		b.WriteString("containerdConfigPatches:\n- |-\n  [plugins.\"io.containerd.grpc.v1.cri\".registry]\n    config_path = \"/etc/containerd/certs.d\"\n")
	}
	return b.String()
}

func (c *cluster) createCluster(ctx context.Context) error {
	ok, err := c.exists(ctx)
	if err != nil {
		return err
	}
	if ok && !c.cfg.Reuse {
		return fmt.Errorf("a kind cluster named %s exists: delete it (kind delete cluster --name %s), set "+
			"KIND_CLUSTER to another name, or set E2E_REUSE_CLUSTER=true", c.cfg.Cluster, c.cfg.Cluster)
	}
	if !ok {
		path := filepath.Join(c.tmp, "kind.yaml")
		if err := os.WriteFile(path, []byte(c.kindConfig()), 0o644); err != nil {
			return err
		}
		argv := []string{c.cfg.Kind, "create", "cluster", "--name", c.cfg.Cluster, "--config", path}
		if c.cfg.NodeImage != "" {
			argv = append(argv, "--image", c.cfg.NodeImage)
		}
		c.created = true
		if err := runStreaming(ctx, argv...); err != nil {
			return err
		}
	}
	if c.registry != "" {
		return c.connectRegistry(ctx)
	}
	return nil
}

// connect writes the cluster's kubeconfig, makes the client and lists the nodes.
func (c *cluster) connect(ctx context.Context) error {
	kubeconfig, err := run(ctx, nil, nil, c.cfg.Kind, "get", "kubeconfig", "--name", c.cfg.Cluster)
	if err != nil {
		return err
	}
	c.kubeconfig = filepath.Join(c.tmp, "kubeconfig")
	if err := os.WriteFile(c.kubeconfig, []byte(kubeconfig), 0o600); err != nil {
		return err
	}
	restConfig, err := clientcmd.RESTConfigFromKubeConfig([]byte(kubeconfig))
	if err != nil {
		return err
	}
	if c.client, err = client.New(restConfig, client.Options{Scheme: scheme}); err != nil {
		return err
	}
	out, err := run(ctx, nil, nil, c.cfg.Kind, "get", "nodes", "--name", c.cfg.Cluster)
	if err != nil {
		return err
	}
	c.nodes = strings.Fields(out)
	slices.Sort(c.nodes)
	if len(c.nodes) == 0 {
		return fmt.Errorf("kind reports no nodes for cluster %s", c.cfg.Cluster)
	}
	ip, err := c.containerIP(ctx, c.cfg.Cluster+"-control-plane")
	if err != nil {
		return err
	}
	c.apiServer = ip + ":6443"
	// Every node takes workloads, the control plane too: the scenarios pin pods to nodes by name.
	_, err = c.kubectl(ctx, "", "taint", "nodes", "--all", "node-role.kubernetes.io/control-plane:NoSchedule-")
	if err != nil && !strings.Contains(err.Error(), "not found") {
		return err
	}
	return nil
}

// containerIP is a container's IPv4 address on the kind network.
func (c *cluster) containerIP(ctx context.Context, name string) (string, error) {
	out, err := run(ctx, nil, nil, c.cfg.Docker, "inspect", "-f",
		`{{with index .NetworkSettings.Networks "`+kindNetwork+`"}}{{.IPAddress}}{{end}}`, name)
	if err != nil {
		return "", err
	}
	ip := strings.TrimSpace(out)
	if ip == "" {
		return "", fmt.Errorf("container %s has no address on the %s network", name, kindNetwork)
	}
	return ip, nil
}

// loadImage puts the product and test images into every node, and /labvm (the echo client) onto every
// node's file system, so that ClientCommand works in NodeExec as it does in pods.
func (c *cluster) loadImage(ctx context.Context) error {
	for _, img := range []string{c.cfg.Image, c.cfg.LabImage} {
		if err := c.kindLoad(ctx, img); err != nil {
			return err
		}
	}
	labvm, err := c.extractLabvm(ctx)
	if err != nil {
		return err
	}
	for _, n := range c.nodes {
		if _, err := run(ctx, nil, nil, c.cfg.Docker, "cp", labvm, n+":/labvm"); err != nil {
			return err
		}
	}
	return nil
}

// kindLoad copies a local image into every node of the cluster.
func (c *cluster) kindLoad(ctx context.Context, image string) error {
	return runStreaming(ctx, c.cfg.Kind, "load", "docker-image", image, "--name", c.cfg.Cluster)
}

// extractLabvm copies /labvm out of the test image (it is static, so it runs on the nodes and the outside host).
func (c *cluster) extractLabvm(ctx context.Context) (string, error) {
	path := filepath.Join(c.tmp, "labvm")
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	out, err := run(ctx, nil, nil, c.cfg.Docker, "create", c.cfg.LabImage)
	if err != nil {
		return "", err
	}
	id := strings.TrimSpace(out)
	defer run(context.WithoutCancel(ctx), nil, nil, c.cfg.Docker, "rm", id) //nolint:errcheck // best effort
	if _, err := run(ctx, nil, nil, c.cfg.Docker, "cp", id+":"+labvmPath, path); err != nil {
		return "", err
	}
	return path, nil
}

// startOutside starts the outside host: a container on the kind network that is no cluster member, with the
// Service network routed through the first node (as the lab's outside host is), so that tests can check that
// ClusterIPs are not served to it. It runs the node image (already present) with /labvm copied in.
func (c *cluster) startOutside(ctx context.Context) error {
	run(ctx, nil, nil, c.cfg.Docker, "rm", "-f", c.outside) //nolint:errcheck // a leftover from an earlier run
	nodeImage, err := run(ctx, nil, nil, c.cfg.Docker, "inspect", "-f", "{{.Config.Image}}", c.nodes[0])
	if err != nil {
		return err
	}
	if _, err := run(ctx, nil, nil, c.cfg.Docker, "run", "-d", "--name", c.outside, "--network", kindNetwork,
		"--cap-add", "NET_ADMIN", "--entrypoint", "sleep", strings.TrimSpace(nodeImage), "infinity"); err != nil {
		return err
	}
	labvm, err := c.extractLabvm(ctx)
	if err != nil {
		return err
	}
	if _, err := run(ctx, nil, nil, c.cfg.Docker, "cp", labvm, c.outside+":/labvm"); err != nil {
		return err
	}
	via, err := c.containerIP(ctx, c.nodes[0])
	if err != nil {
		return err
	}
	_, err = run(ctx, nil, nil, c.cfg.Docker, "exec", c.outside, "ip", "route", "replace", serviceCIDR, "via", via)
	return err
}

// nodeTool is a command the scenarios run and the Debian package that has it: ipvsadm on the nodes (to read the
// kernel's tables), arping on the outside host. The kind node image has iproute2, iptables and nft already.
type nodeTool struct{ command, pkg string }

var (
	nodeToolIPVSAdm = nodeTool{"ipvsadm", "ipvsadm"}
	nodeToolARPing  = nodeTool{"arping", "iputils-arping"}
)

// installNodeTools installs the tools with apt in the node containers and the outside host (the kind node image
// is Debian). It needs the nodes to reach the Debian mirrors, as kind needs the internet to pull its images.
func (c *cluster) installNodeTools(ctx context.Context) error {
	containers := map[string]nodeTool{c.outside: nodeToolARPing}
	for _, n := range c.nodes {
		containers[n] = nodeToolIPVSAdm
	}
	for name, t := range containers {
		script := "command -v " + t.command + " >/dev/null 2>&1 || { export DEBIAN_FRONTEND=noninteractive; " +
			"apt-get update -qq && apt-get install -y -qq --no-install-recommends " + t.pkg + "; }"
		if _, err := run(ctx, nil, nil, c.cfg.Docker, "exec", name, "sh", "-c", script); err != nil {
			return err
		}
	}
	return nil
}

// kubectl runs kubectl against the cluster.
func (c *cluster) kubectl(ctx context.Context, stdin string, args ...string) (string, error) {
	var in *strings.Reader
	if stdin != "" {
		in = strings.NewReader(stdin)
	}
	argv := append([]string{c.cfg.Kubectl, "--kubeconfig", c.kubeconfig}, args...)
	if in == nil {
		return run(ctx, nil, nil, argv...)
	}
	return run(ctx, nil, in, argv...)
}

// tearDown deletes what setUp made, unless E2E_KEEP_CLUSTER is set; with E2E_ARTIFACTS set and a failed suite,
// it first exports the cluster's logs there.
func (c *cluster) tearDown(ctx context.Context, failed bool) {
	if failed && c.cfg.Artifacts != "" && c.kubeconfig != "" {
		dir := filepath.Join(c.cfg.Artifacts, "kind-logs")
		if err := runStreaming(ctx, c.cfg.Kind, "export", "logs", dir, "--name", c.cfg.Cluster); err != nil {
			fmt.Fprintf(GinkgoWriter, "exporting logs: %v\n", err)
		}
	}
	if c.cfg.Keep {
		fmt.Fprintf(GinkgoWriter, "E2E_KEEP_CLUSTER: leaving cluster %s running; kubeconfig: kind get kubeconfig --name %s\n",
			c.cfg.Cluster, c.cfg.Cluster)
		return
	}
	run(ctx, nil, nil, c.cfg.Docker, "rm", "-f", c.outside) //nolint:errcheck // best effort
	if c.registry != "" {
		run(ctx, nil, nil, c.cfg.Docker, "rm", "-f", c.registry) //nolint:errcheck // best effort
	}
	if c.created {
		if err := runStreaming(ctx, c.cfg.Kind, "delete", "cluster", "--name", c.cfg.Cluster); err != nil {
			fmt.Fprintf(GinkgoWriter, "deleting the cluster: %v\n", err)
		}
	}
	if c.tmp != "" {
		os.RemoveAll(c.tmp)
	}
}
