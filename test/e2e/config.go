//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ipvs-operator/ipvs-operator/test/install"
)

// The names config/default installs under and the DaemonSet the operator renders, as test/install knows them.
const (
	operatorNamespace  = install.Namespace
	operatorDeployment = install.OperatorDeployment
	agentDaemonSet     = install.AgentDaemonSet
	packageName        = "ipvs-operator"
	// defaultImage is the image config/manager and the committed bundle name; the OLM path rewrites it to IMG.
	defaultImage = "ghcr.io/ipvs-operator/ipvs-operator:v0.1.0"
	// serviceCIDR is kind's default Service network; the outside host routes it through the first node.
	serviceCIDR = "10.96.0.0/16"
	// kindNetwork is the Docker network kind puts its nodes on.
	kindNetwork = "kind"
)

// Agent scopes (api/agentconfig.ScopeLabelled and ScopeAll).
const (
	scopeLabelled = "labelled"
	scopeAll      = "all"
)

// config is what the environment asks of a run; see README ("End-to-end tests in kind").
type config struct {
	// Tools.
	Docker, Kind, Kubectl, Kustomize, OperatorSDK string

	Cluster   string // KIND_CLUSTER
	NodeImage string // KIND_NODE_IMAGE: kindest/node image; "" = kind's default
	// Workers is E2E_WORKERS, the worker nodes besides the control plane (default 1). The control plane is
	// untainted, so every node runs workloads: the scenarios pin pods to the first two nodes, sorted by name.
	Workers int
	Image   string // IMG: the product image, built and loaded into the nodes
	// LabImage is E2E_LAB_IMG (default: IMG's repository + "-lab", same tag): the test image, built from the
	// Dockerfile's lab target and loaded into the nodes; the scenarios' echo pods run it.
	LabImage string
	// KubeProxyMode is kind's networking.kubeProxyMode: "none" (the agents replace kube-proxy, scope all) or
	// "iptables"/"nftables" (kube-proxy runs, the agents serve only labelled Services).
	KubeProxyMode string
	Scope         string // AGENT_SCOPE given to the operator (derived from KubeProxyMode unless set)
	OLM           bool   // E2E_OLM: install through OLM (`operator-sdk run bundle`) instead of kustomize
	OLMVersion    string // E2E_OLM_VERSION
	Reuse         bool   // E2E_REUSE_CLUSTER: use an existing cluster of that name, skip creating it
	Keep          bool   // E2E_KEEP_CLUSTER: leave the cluster (and helpers) running afterwards
	SkipBuild     bool   // E2E_SKIP_BUILD: IMG and E2E_LAB_IMG exist locally already; do not `docker build`
	Artifacts     string // E2E_ARTIFACTS: directory for `kind export logs` when the suite fails
	Timeout       time.Duration

	RepoRoot string
}

func loadConfig() (config, error) {
	root, err := repoRoot()
	if err != nil {
		return config{}, err
	}
	c := config{
		Docker:        env("CONTAINER_TOOL", "docker"),
		Kind:          env("KIND", "kind"),
		Kubectl:       env("KUBECTL", "kubectl"),
		Kustomize:     env("KUSTOMIZE", filepath.Join(root, "bin", "kustomize")),
		OperatorSDK:   env("OPERATOR_SDK", filepath.Join(root, "bin", "operator-sdk")),
		Cluster:       env("KIND_CLUSTER", "ipvs-operator-e2e"),
		NodeImage:     os.Getenv("KIND_NODE_IMAGE"),
		Image:         env("IMG", defaultImage),
		LabImage:      os.Getenv("E2E_LAB_IMG"),
		OLM:           boolEnv("E2E_OLM"),
		OLMVersion:    env("E2E_OLM_VERSION", "0.28.0"),
		Reuse:         boolEnv("E2E_REUSE_CLUSTER"),
		Keep:          boolEnv("E2E_KEEP_CLUSTER"),
		SkipBuild:     boolEnv("E2E_SKIP_BUILD"),
		Artifacts:     os.Getenv("E2E_ARTIFACTS"),
		RepoRoot:      root,
		Workers:       1,
		KubeProxyMode: os.Getenv("E2E_KUBE_PROXY_MODE"),
		Scope:         os.Getenv("AGENT_SCOPE"),
	}
	if s := os.Getenv("E2E_WORKERS"); s != "" {
		if c.Workers, err = strconv.Atoi(s); err != nil || c.Workers < 0 {
			return c, fmt.Errorf("E2E_WORKERS=%q is not a number of worker nodes", s)
		}
	}
	if c.KubeProxyMode == "" {
		// OLM's own pods reach the API server through the `kubernetes` Service; without kube-proxy that
		// Service works only once the agents run, and OLM is what would install them.
		c.KubeProxyMode = "none"
		if c.OLM {
			c.KubeProxyMode = "iptables"
		}
	}
	switch c.KubeProxyMode {
	case "none", "iptables", "nftables":
	default:
		return c, fmt.Errorf("E2E_KUBE_PROXY_MODE=%q: want none, iptables or nftables", c.KubeProxyMode)
	}
	if c.Scope == "" {
		c.Scope = scopeLabelled
		if c.KubeProxyMode == "none" {
			c.Scope = scopeAll
		}
	}
	if c.Scope != scopeLabelled && c.Scope != scopeAll {
		return c, fmt.Errorf("AGENT_SCOPE=%q: want %s or %s", c.Scope, scopeLabelled, scopeAll)
	}
	if c.KubeProxyMode == "none" && c.Scope != scopeAll {
		return c, fmt.Errorf("without kube-proxy the agents must serve every Service: AGENT_SCOPE must be %s", scopeAll)
	}
	if c.OLM && c.KubeProxyMode == "none" {
		return c, fmt.Errorf("E2E_OLM=true needs kube-proxy (E2E_KUBE_PROXY_MODE=iptables or nftables): OLM cannot start before the agents it installs")
	}
	if c.OLM && c.Scope != scopeLabelled {
		return c, fmt.Errorf("E2E_OLM=true installs with the CSV's defaults: AGENT_SCOPE must be %s", scopeLabelled)
	}
	if strings.HasSuffix(c.Image, ":latest") || !strings.Contains(c.Image[strings.LastIndex(c.Image, "/")+1:], ":") {
		return c, fmt.Errorf("IMG=%q: use an explicit tag other than latest, so that nodes use the loaded image instead of pulling", c.Image)
	}
	if c.LabImage == "" {
		c.LabImage = labImageFor(c.Image)
	}
	if strings.HasSuffix(c.LabImage, ":latest") || !strings.Contains(c.LabImage[strings.LastIndex(c.LabImage, "/")+1:], ":") {
		return c, fmt.Errorf("E2E_LAB_IMG=%q: use an explicit tag other than latest, so that nodes use the loaded image instead of pulling", c.LabImage)
	}
	c.Timeout = 10 * time.Minute
	if s := os.Getenv("E2E_SETUP_TIMEOUT"); s != "" {
		if c.Timeout, err = time.ParseDuration(s); err != nil {
			return c, fmt.Errorf("E2E_SETUP_TIMEOUT=%q: %w", s, err)
		}
	}
	return c, nil
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func boolEnv(name string) bool {
	v, _ := strconv.ParseBool(os.Getenv(name))
	return v
}

// repoRoot is the module's root: `go test` runs the suite in its package directory, test/e2e.
func repoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	root := filepath.Clean(filepath.Join(wd, "..", ".."))
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		return "", fmt.Errorf("repository root %s: %w", root, err)
	}
	return root, nil
}
