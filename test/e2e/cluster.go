//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// cluster is a kind cluster with the product installed, plus its helper containers.
type cluster struct {
	cfg config
	// cmd runs every external command (execRunner; a fake in the dry run).
	cmd commandRunner
	// log receives progress lines (GinkgoWriter in the suite).
	log        io.Writer
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

// newCluster is a cluster not set up yet, whose commands run through cmd.
func newCluster(cfg config, cmd commandRunner, log io.Writer) (*cluster, error) {
	c := &cluster{cfg: cfg, cmd: cmd, log: log, outside: cfg.Cluster + "-outside"}
	var err error
	c.tmp, err = os.MkdirTemp("", "ipvs-operator-e2e-")
	return c, err
}

// setUpStep is one step of setUp. needsAPI marks the steps that talk to the cluster's API server, where the
// dry run stops: everything before them only runs commands.
type setUpStep struct {
	name     string
	fn       func(context.Context) error
	needsAPI bool
}

func (c *cluster) setUpSteps() []setUpStep {
	return []setUpStep{
		{name: "check tools", fn: c.checkTools},
		{name: "build the images", fn: c.buildImage},
		{name: "start the local registry", fn: c.startRegistry},
		{name: "create the kind cluster", fn: c.createCluster},
		{name: "connect to the cluster", fn: c.connect},
		{name: "load the images into the nodes", fn: c.loadImage},
		{name: "start the outside host", fn: c.startOutside},
		{name: "start the node tool containers", fn: c.startNodeTools},
		// OLM is installed with operator-sdk and kubectl (commands only); the kustomize install applies
		// objects through the client.
		{name: "install the operator", fn: c.install, needsAPI: !c.cfg.OLM},
		{name: "wait for the agents", fn: c.waitForAgents, needsAPI: true},
	}
}

// setUp makes a ready cluster: the images built and loaded, the operator installed, an agent ready on every
// node. step is told each step's name as it starts (Ginkgo's By in the suite). On error the cluster is still
// returned, so that tearDown can clean up what was made.
func (c *cluster) setUp(ctx context.Context, step func(string)) error {
	return c.runSteps(ctx, c.setUpSteps(), step)
}

func (c *cluster) runSteps(ctx context.Context, steps []setUpStep, step func(string)) error {
	for _, s := range steps {
		step(s.name)
		t0 := time.Now()
		if err := s.fn(ctx); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		fmt.Fprintf(c.log, "%s: done in %s\n", s.name, time.Since(t0).Round(time.Second))
	}
	return nil
}

// checkTools finds the tools and refuses a rootless Docker engine at once (README, "Host requirements"): its
// containers live in a user namespace, where the kernel refuses IPVS's netlink commands, so every agent would
// fail much later with a less clear error.
func (c *cluster) checkTools(ctx context.Context) error {
	tools := []string{c.cfg.Docker, c.cfg.Kind, c.cfg.Kubectl, c.cfg.Kustomize}
	if c.cfg.OLM {
		tools = append(tools, c.cfg.OperatorSDK)
	}
	var errs []error
	for _, t := range tools {
		if _, err := c.cmd.LookPath(t); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	// Docker lists "name=rootless" among its security options when the engine runs rootless.
	out, err := c.cmd.Run(ctx, nil, nil, c.cfg.Docker, "info", "--format", "{{json .SecurityOptions}}")
	if err != nil {
		return fmt.Errorf("is the Docker engine running? %w", err)
	}
	if strings.Contains(out, "name=rootless") {
		return errors.New("the Docker engine runs rootless: kind nodes would live in a user namespace, where the " +
			"kernel refuses IPVS's netlink commands; use rootful Docker (see README, End-to-end tests in kind)")
	}
	return nil
}

// buildImage builds the product image (IMG) and the test image (E2E_LAB_IMG) from their Dockerfile targets.
func (c *cluster) buildImage(ctx context.Context) error {
	for _, img := range []struct{ target, ref string }{{productTarget, c.cfg.Image}, {labTarget, c.cfg.LabImage}} {
		if c.cfg.SkipBuild {
			if _, err := c.cmd.Run(ctx, nil, nil, c.cfg.Docker, "image", "inspect", img.ref); err != nil {
				return err
			}
			continue
		}
		if err := c.cmd.Stream(ctx, c.cfg.Docker, "build", "--target", img.target, "-t", img.ref, c.cfg.RepoRoot); err != nil {
			return err
		}
	}
	return nil
}

func (c *cluster) exists(ctx context.Context) (bool, error) {
	out, err := c.cmd.Run(ctx, nil, nil, c.cfg.Kind, "get", "clusters")
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
		if err := c.cmd.Stream(ctx, argv...); err != nil {
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
	kubeconfig, err := c.cmd.Run(ctx, nil, nil, c.cfg.Kind, "get", "kubeconfig", "--name", c.cfg.Cluster)
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
	out, err := c.cmd.Run(ctx, nil, nil, c.cfg.Kind, "get", "nodes", "--name", c.cfg.Cluster)
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
	out, err := c.cmd.Run(ctx, nil, nil, c.cfg.Docker, "inspect", "-f",
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

// loadImage puts the product and test images into every node.
func (c *cluster) loadImage(ctx context.Context) error {
	for _, img := range []string{c.cfg.Image, c.cfg.LabImage} {
		if err := c.kindLoad(ctx, img); err != nil {
			return err
		}
	}
	return nil
}

// platformFormat prints a local image's platform as `docker save --platform` takes it (os/arch[/variant]).
const platformFormat = "{{.Os}}/{{.Architecture}}{{with .Variant}}/{{.}}{{end}}"

// kindLoad copies a local image into every node of the cluster with `kind load docker-image`, and if that
// fails, through a single-platform archive. With Docker's containerd image store (the default of new Docker
// Engine 29 installs and of Docker Desktop), `docker save`, which `kind load docker-image` runs, writes the
// image's whole OCI index, naming platforms and attestation manifests whose blobs the host never had, and
// the nodes' `ctr images import --all-platforms` then fails with "content digest ... not found" (kind issue
// 3795, open). kind's documented workaround is `docker save --platform <the image's platform>` and
// `kind load image-archive`; `docker save --platform` needs Docker 28 or later.
func (c *cluster) kindLoad(ctx context.Context, image string) error {
	err := c.cmd.Stream(ctx, c.cfg.Kind, "load", "docker-image", image, "--name", c.cfg.Cluster)
	if err == nil {
		return nil
	}
	fmt.Fprintf(c.log, "kind load docker-image %s failed; loading a single-platform archive instead (kind issue 3795)\n", image)
	out, perr := c.cmd.Run(ctx, nil, nil, c.cfg.Docker, "image", "inspect", "-f", platformFormat, image)
	if perr != nil {
		return errors.Join(err, perr)
	}
	archive := filepath.Join(c.tmp, archiveName(image))
	defer os.Remove(archive)
	if _, serr := c.cmd.Run(ctx, nil, nil, c.cfg.Docker, "image", "save", "--platform", strings.TrimSpace(out), "-o", archive, image); serr != nil {
		return errors.Join(err, serr)
	}
	if lerr := c.cmd.Stream(ctx, c.cfg.Kind, "load", "image-archive", archive, "--name", c.cfg.Cluster); lerr != nil {
		return errors.Join(err, lerr)
	}
	return nil
}

// archiveName is a file name for an image reference's archive.
func archiveName(image string) string {
	return strings.NewReplacer("/", "_", ":", "_", "@", "_").Replace(image) + ".tar"
}

// The helper containers run the test image (E2E_LAB_IMG), which carries /labvm, ipvsadm, arping and iproute2,
// as root: nothing is installed into the kind nodes, which may have no internet access and, with
// E2E_REUSE_CLUSTER, belong to someone else.
//
// Why not read the kernel through the agent's /debug/ipvs instead of ipvsadm: that endpoint prints what the
// agent believes it programmed, from its memory; the scenarios check the kernel itself (a table flushed by
// hand with `ipvsadm -C`, connection counts, a node left clean after the uninstall when no agent runs
// anymore), so they need an independent reader that also writes (the drift steps).

// helperRun is `docker run` of the test image as a long-lived root container with extra arguments.
func (c *cluster) helperRun(ctx context.Context, name string, args ...string) error {
	c.cmd.Run(ctx, nil, nil, c.cfg.Docker, "rm", "-f", name) //nolint:errcheck // a leftover from an earlier run
	argv := append([]string{c.cfg.Docker, "run", "-d", "--name", name}, args...)
	argv = append(argv, "--user", "0", "--entrypoint", "sleep", c.cfg.LabImage, "infinity")
	_, err := c.cmd.Run(ctx, nil, nil, argv...)
	return err
}

// startOutside starts the outside host: a container on the kind network that is no cluster member, with the
// Service network routed through the first node (as the lab's outside host is), so that tests can check that
// ClusterIPs are not served to it. arping needs NET_RAW (in Docker's default set; asked for explicitly).
func (c *cluster) startOutside(ctx context.Context) error {
	if err := c.helperRun(ctx, c.outside, "--network", kindNetwork, "--cap-add", "NET_ADMIN", "--cap-add", "NET_RAW"); err != nil {
		return err
	}
	via, err := c.containerIP(ctx, c.nodes[0])
	if err != nil {
		return err
	}
	_, err = c.cmd.Run(ctx, nil, nil, c.cfg.Docker, "exec", c.outside, "ip", "route", "replace", serviceCIDR, "via", via)
	return err
}

// toolsContainer is the name of a node's tools container.
func toolsContainer(node string) string { return node + "-tools" }

// startNodeTools starts, for every node, a tools container in the node container's network namespace
// (`--network container:<node>`): IPVS tables, addresses, routes and nftables are per network namespace,
// so ipvsadm and the echo client there see and act on exactly what the node's host network has. It needs
// CAP_NET_ADMIN (ipvsadm's netlink commands require it in the initial user namespace: rootful Docker).
func (c *cluster) startNodeTools(ctx context.Context) error {
	for _, n := range c.nodes {
		if err := c.helperRun(ctx, toolsContainer(n), "--network", "container:"+n, "--cap-add", "NET_ADMIN"); err != nil {
			return err
		}
	}
	return nil
}

// nodeExecContainer is the container where NodeExec runs argv for node: the node container itself for what
// the kind node image has (iproute2, nft, iptables, sh, cat; /proc and /sys of the node), its tools container
// for what it lacks (ipvsadm, the echo client /labvm). Both are in the node's network namespace.
func nodeExecContainer(node string, argv []string) string {
	switch argv[0] {
	case "ipvsadm", labvmPath:
		return toolsContainer(node)
	}
	return node
}

// kubectl runs kubectl against the cluster.
func (c *cluster) kubectl(ctx context.Context, stdin string, args ...string) (string, error) {
	var in *strings.Reader
	if stdin != "" {
		in = strings.NewReader(stdin)
	}
	argv := append([]string{c.cfg.Kubectl, "--kubeconfig", c.kubeconfig}, args...)
	if in == nil {
		return c.cmd.Run(ctx, nil, nil, argv...)
	}
	return c.cmd.Run(ctx, nil, in, argv...)
}

// tearDown deletes what setUp made, unless E2E_KEEP_CLUSTER is set; with E2E_ARTIFACTS set and a failed suite,
// it first exports the cluster's logs there.
func (c *cluster) tearDown(ctx context.Context, failed bool) {
	if failed && c.cfg.Artifacts != "" && c.kubeconfig != "" {
		dir := filepath.Join(c.cfg.Artifacts, "kind-logs")
		if err := c.cmd.Stream(ctx, c.cfg.Kind, "export", "logs", dir, "--name", c.cfg.Cluster); err != nil {
			fmt.Fprintf(c.log, "exporting logs: %v\n", err)
		}
	}
	if c.cfg.Keep {
		fmt.Fprintf(c.log, "E2E_KEEP_CLUSTER: leaving cluster %s running; kubeconfig: kind get kubeconfig --name %s\n",
			c.cfg.Cluster, c.cfg.Cluster)
		return
	}
	c.cmd.Run(ctx, nil, nil, c.cfg.Docker, "rm", "-f", c.outside) //nolint:errcheck // best effort
	for _, n := range c.nodes {
		c.cmd.Run(ctx, nil, nil, c.cfg.Docker, "rm", "-f", toolsContainer(n)) //nolint:errcheck // best effort
	}
	if c.registry != "" {
		c.cmd.Run(ctx, nil, nil, c.cfg.Docker, "rm", "-f", c.registry) //nolint:errcheck // best effort
	}
	if c.created {
		if err := c.cmd.Stream(ctx, c.cfg.Kind, "delete", "cluster", "--name", c.cfg.Cluster); err != nil {
			fmt.Fprintf(c.log, "deleting the cluster: %v\n", err)
		}
	}
	if c.tmp != "" {
		os.RemoveAll(c.tmp)
	}
}
