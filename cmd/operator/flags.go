package main

import (
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/ipvs-operator/ipvs-operator/api/agentconfig"
	"github.com/ipvs-operator/ipvs-operator/api/v1alpha1"
	"github.com/ipvs-operator/ipvs-operator/controllers/operator"
)

// serviceAccountNamespaceFile holds the pod's namespace in every pod that mounts its ServiceAccount token.
const serviceAccountNamespaceFile = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

// options are the operator's command line, after flags and environment.
type options struct {
	metricsAddr   string
	probeAddr     string
	secureMetrics bool
	enableHTTP2   bool
	leaderElect   bool
	namespace     string

	agentImage            string
	agentImagePullPolicy  string
	agentMetricsPort      int
	agentHealthPort       int
	agentAPIServerAddress string
	// agent holds the agent's command-line settings the operator's --agent-* flags set.
	agent agentconfig.Config
}

// agentSettings names the operator setting behind each agent flag the operator renders, so an invalid
// value is reported under the name its user set.
var agentSettings = map[string]string{
	agentconfig.FlagInterface:        "AGENT_INTERFACE (--agent-interface)",
	agentconfig.FlagScope:            "AGENT_SCOPE (--agent-scope)",
	agentconfig.FlagDefaultScheduler: "AGENT_DEFAULT_SCHEDULER (--agent-default-scheduler)",
	agentconfig.FlagAuditPeriod:      "AGENT_AUDIT_PERIOD (--agent-audit-period)",
	agentconfig.FlagDriftCheckPeriod: "AGENT_DRIFT_CHECK_PERIOD (--agent-drift-check-period)",
	agentconfig.FlagMetricsAddress:   "AGENT_METRICS_PORT (--agent-metrics-port)",
	agentconfig.FlagHealthAddress:    "AGENT_HEALTH_PORT (--agent-health-port)",
	agentconfig.FlagDetectLocalMode:  "AGENT_DETECT_LOCAL_MODE (--agent-detect-local-mode)",
	agentconfig.FlagClusterCIDR:      "AGENT_CLUSTER_CIDR (--agent-cluster-cidr)",
	agentconfig.FlagPodBridge:        "AGENT_POD_BRIDGE_INTERFACE (--agent-pod-bridge-interface)",
	agentconfig.FlagPodIfacePrefix:   "AGENT_POD_INTERFACE_NAME_PREFIX (--agent-pod-interface-name-prefix)",
	agentconfig.FlagStrictARP:        "AGENT_STRICT_ARP (--agent-strict-arp)",
	agentconfig.FlagTakeover:         "AGENT_TAKEOVER_KUBE_PROXY_IPVS (--agent-takeover-kube-proxy-ipvs)",
}

// envDefaults reads flag defaults from the environment and remembers which variables did not parse, so a
// typo in the Deployment's env is an error at start, not a silent default.
type envDefaults struct {
	getenv func(string) string
	errs   []error
}

// str returns the first non-empty variable of names, or def.
func (e *envDefaults) str(def string, names ...string) string {
	for _, n := range names {
		if v := strings.TrimSpace(e.getenv(n)); v != "" {
			return v
		}
	}
	return def
}

func (e *envDefaults) duration(name string, def time.Duration) time.Duration {
	v := strings.TrimSpace(e.getenv(name))
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		e.errs = append(e.errs, fmt.Errorf("environment variable %s=%q: %w", name, v, err))
		return def
	}
	return d
}

// value sets v from the variable name, if set.
func (e *envDefaults) value(name string, v flag.Value) flag.Value {
	if s := strings.TrimSpace(e.getenv(name)); s != "" {
		if err := v.Set(s); err != nil {
			e.errs = append(e.errs, fmt.Errorf("environment variable %s=%q: %w", name, s, err))
		}
	}
	return v
}

func (e *envDefaults) integer(name string, def int) int {
	v := strings.TrimSpace(e.getenv(name))
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		e.errs = append(e.errs, fmt.Errorf("environment variable %s=%q: %w", name, v, err))
		return def
	}
	return n
}

func (e *envDefaults) boolean(name string, def bool) bool {
	v := strings.TrimSpace(e.getenv(name))
	if v == "" {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		e.errs = append(e.errs, fmt.Errorf("environment variable %s=%q: %w", name, v, err))
		return def
	}
	return b
}

// bindFlags defines the operator's flags on fs, with defaults from getenv (os.Getenv in main). The returned
// error reports environment variables that did not parse. It defines no -kubeconfig flag: controller-runtime
// registers that one globally, and defining it again panics.
func bindFlags(fs *flag.FlagSet, getenv func(string) string) (*options, error) {
	env := &envDefaults{getenv: getenv}
	o := &options{agent: agentconfig.Default()}

	fs.StringVar(&o.metricsAddr, "metrics-bind-address", "0",
		"The address the metrics endpoint binds to: :8443 for HTTPS, :8080 for HTTP, 0 to disable it.")
	fs.StringVar(&o.probeAddr, "health-probe-bind-address", ":8081", "The address the health probe endpoint binds to.")
	fs.BoolVar(&o.secureMetrics, "metrics-secure", true,
		"Serve metrics over HTTPS, authenticated and authorized by the API server (TokenReview, SubjectAccessReview).")
	fs.BoolVar(&o.enableHTTP2, "enable-http2", false,
		"Enable HTTP/2 for the metrics server (off by default: HTTP/2 Stream Cancellation and Rapid Reset CVEs).")
	fs.BoolVar(&o.leaderElect, "leader-elect", true,
		"Enable leader election, so that only one operator replica reconciles at a time.")
	fs.StringVar(&o.namespace, "operator-namespace", env.str("", "POD_NAMESPACE"),
		"The operator's namespace, where the agent DaemonSet and the leader election Lease live (env POD_NAMESPACE; "+
			"default: the pod's ServiceAccount namespace).")

	fs.StringVar(&o.agentImage, "agent-image", env.str("", "RELATED_IMAGE_AGENT", "AGENT_IMAGE"),
		"The agent's image (env RELATED_IMAGE_AGENT, which OLM rewrites for mirrored registries, else AGENT_IMAGE).")
	fs.StringVar(&o.agentImagePullPolicy, "agent-image-pull-policy", env.str(string(corev1.PullIfNotPresent), "AGENT_IMAGE_PULL_POLICY"),
		"The agent's image pull policy: Always, IfNotPresent or Never (env AGENT_IMAGE_PULL_POLICY).")
	fs.StringVar(&o.agent.Scope, "agent-scope", env.str(o.agent.Scope, "AGENT_SCOPE"),
		"Which Services the agents program: labelled (service.kubernetes.io/service-proxy-name="+v1alpha1.ServiceProxyName+
			") or all (replaces kube-proxy) (env AGENT_SCOPE).")
	fs.StringVar((*string)(&o.agent.DefaultScheduler), "agent-default-scheduler", env.str(string(o.agent.DefaultScheduler), "AGENT_DEFAULT_SCHEDULER"),
		"The IPVS scheduler of Services no ServicePolicy governs (env AGENT_DEFAULT_SCHEDULER).")
	fs.StringVar(&o.agent.Interface, "agent-interface", env.str(o.agent.Interface, "AGENT_INTERFACE"),
		"The dummy device the agents bind ClusterIPs to (env AGENT_INTERFACE).")
	fs.DurationVar(&o.agent.AuditPeriod, "agent-audit-period", env.duration("AGENT_AUDIT_PERIOD", o.agent.AuditPeriod),
		"How often the agents re-read the kernel's IPVS tables to repair drift (env AGENT_AUDIT_PERIOD).")
	fs.DurationVar(&o.agent.DriftCheckPeriod, "agent-drift-check-period", env.duration("AGENT_DRIFT_CHECK_PERIOD", o.agent.DriftCheckPeriod),
		"How often the agents check whether the kernel lost their state wholesale; 0 disables it (env AGENT_DRIFT_CHECK_PERIOD).")
	fs.BoolVar(&o.agent.StrictARP, "agent-strict-arp", env.boolean("AGENT_STRICT_ARP", o.agent.StrictARP),
		"Whether the agents keep nodes from answering ARP for the ClusterIPs (arp_ignore=1, arp_announce=2) (env AGENT_STRICT_ARP).")
	fs.BoolVar(&o.agent.TakeoverKubeProxyIPVS, "agent-takeover-kube-proxy-ipvs", env.boolean("AGENT_TAKEOVER_KUBE_PROXY_IPVS", o.agent.TakeoverKubeProxyIPVS),
		"Whether the agents take over nodes that kube-proxy programmed in IPVS mode (stop kube-proxy first; needs --agent-scope=all) (env AGENT_TAKEOVER_KUBE_PROXY_IPVS).")
	fs.IntVar(&o.agentMetricsPort, "agent-metrics-port", env.integer("AGENT_METRICS_PORT", int(agentconfig.DefaultMetricsPort)),
		"The agents' metrics port on each node (host network) (env AGENT_METRICS_PORT).")
	fs.IntVar(&o.agentHealthPort, "agent-health-port", env.integer("AGENT_HEALTH_PORT", int(agentconfig.DefaultHealthPort)),
		"The agents' health probe port on each node (host network) (env AGENT_HEALTH_PORT).")
	fs.StringVar((*string)(&o.agent.DetectLocalMode), "agent-detect-local-mode", env.str(string(o.agent.DetectLocalMode), "AGENT_DETECT_LOCAL_MODE"),
		fmt.Sprintf("How the agents tell their node's pods from other sources: one of %v, as kube-proxy's --detect-local-mode "+
			"(env AGENT_DETECT_LOCAL_MODE). NodeCIDR needs Nodes with spec.podCIDRs; for CNIs without them (Calico IPAM, "+
			"Cilium cluster-pool, AWS VPC CNI) use ClusterCIDR with --agent-cluster-cidr, or an interface mode.", agentconfig.DetectLocalModes))
	fs.Var(env.value("AGENT_CLUSTER_CIDR", agentconfig.CIDRsValue(&o.agent.ClusterCIDRs)), "agent-cluster-cidr",
		"The cluster's pod CIDRs, comma-separated, one per IP family, for --agent-detect-local-mode=ClusterCIDR (env AGENT_CLUSTER_CIDR).")
	fs.StringVar(&o.agent.PodBridgeInterface, "agent-pod-bridge-interface", env.str("", "AGENT_POD_BRIDGE_INTERFACE"),
		"The pods' bridge on every node, for --agent-detect-local-mode=BridgeInterface (env AGENT_POD_BRIDGE_INTERFACE).")
	fs.StringVar(&o.agent.PodInterfaceNamePrefix, "agent-pod-interface-name-prefix", env.str("", "AGENT_POD_INTERFACE_NAME_PREFIX"),
		"The name prefix of the pods' host interfaces, for --agent-detect-local-mode=InterfaceNamePrefix (env AGENT_POD_INTERFACE_NAME_PREFIX).")
	fs.StringVar(&o.agentAPIServerAddress, "agent-apiserver-address", env.str("", "AGENT_APISERVER_ADDRESS"),
		"host:port of the API server for the agents, instead of the kubernetes Service's ClusterIP; needed with "+
			"--agent-scope=all when no kube-proxy runs (env AGENT_APISERVER_ADDRESS).")

	return o, errors.Join(env.errs...)
}

// resolveNamespace fills in the namespace from the ServiceAccount's namespace file when neither the flag nor
// POD_NAMESPACE gave one.
func (o *options) resolveNamespace(readFile func(string) ([]byte, error)) error {
	if o.namespace != "" {
		return nil
	}
	b, err := readFile(serviceAccountNamespaceFile)
	if err != nil {
		return fmt.Errorf("the operator's namespace is unknown: set POD_NAMESPACE or --operator-namespace (%w)", err)
	}
	o.namespace = strings.TrimSpace(string(b))
	if o.namespace == "" {
		return errors.New("the operator's namespace is unknown: set POD_NAMESPACE or --operator-namespace")
	}
	return nil
}

// agentConfig returns the defaulted, validated agent configuration. An invalid agent setting is reported
// under the environment variable and flag the operator takes it from.
func (o *options) agentConfig() (operator.AgentConfig, error) {
	if o.agentMetricsPort < 0 || o.agentMetricsPort > 65535 || o.agentHealthPort < 0 || o.agentHealthPort > 65535 {
		return operator.AgentConfig{}, fmt.Errorf("AGENT_METRICS_PORT %d and AGENT_HEALTH_PORT %d (--agent-metrics-port, --agent-health-port) must be in 1-65535",
			o.agentMetricsPort, o.agentHealthPort)
	}
	cfg := operator.AgentConfig{
		Namespace:        o.namespace,
		Image:            o.agentImage,
		ImagePullPolicy:  corev1.PullPolicy(o.agentImagePullPolicy),
		MetricsPort:      int32(o.agentMetricsPort),
		HealthPort:       int32(o.agentHealthPort),
		APIServerAddress: o.agentAPIServerAddress,
		Agent:            o.agent,
	}.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("invalid agent configuration: %w", nameAgentSettings(err))
	}
	return cfg, nil
}

// nameAgentSettings prefixes each *agentconfig.FlagError in err with the operator setting it came from.
func nameAgentSettings(err error) error {
	all := flatten(err)
	errs := make([]error, 0, len(all))
	for _, e := range all {
		var fe *agentconfig.FlagError
		if errors.As(e, &fe) && agentSettings[fe.Flag] != "" {
			e = fmt.Errorf("%s: %w", agentSettings[fe.Flag], e)
		}
		errs = append(errs, e)
	}
	return errors.Join(errs...)
}

// flatten returns the errors joined in err (errors.Join), recursively.
func flatten(err error) []error {
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return []error{err}
	}
	var out []error
	for _, e := range j.Unwrap() {
		out = append(out, flatten(e)...)
	}
	return out
}
