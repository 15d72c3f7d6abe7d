// Package agentconfig is the contract between the operator and its agents: every setting of the agent's
// command line, with its flag name, default and validation, in one place. The agent binds its flags with
// Config.BindFlags and validates with Config.Validate; the operator renders the DaemonSet's arguments with
// Config.Args and refuses its own settings through the same validation, so neither can drift from the other
// (the ports once did). It lives under api/ because it is an interface between two programs, like the CRD
// types beside it, rather than a controller; it depends only on the API types.
package agentconfig

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ipvs-operator/ipvs-operator/api/v1alpha1"
)

// Flag names of the agent's command line.
const (
	FlagNodeName         = "node-name"
	FlagInterface        = "interface"
	FlagScope            = "scope"
	FlagDefaultScheduler = "default-scheduler"
	FlagAuditPeriod      = "audit-period"
	FlagDriftCheckPeriod = "drift-check-period"
	FlagClusterCIDR      = "cluster-cidr"
	FlagDetectLocalMode  = "detect-local-mode"
	FlagPodBridge        = "pod-bridge-interface"
	FlagPodIfacePrefix   = "pod-interface-name-prefix"
	FlagMetricsAddress   = "metrics-bind-address"
	FlagHealthAddress    = "health-probe-bind-address"
	FlagWorkers          = "workers"
	FlagSysctlRoot       = "sysctl-root"
	FlagCleanup          = "cleanup"
	FlagLoadModules      = "load-kernel-modules"
	FlagStrictARP        = "strict-arp"
	FlagTakeover         = "takeover-kube-proxy-ipvs"
)

// NodeNameEnv is the environment variable the agent reads its node's name from when --node-name is not
// given; the DaemonSet sets it from the downward API (spec.nodeName).
const NodeNameEnv = "NODE_NAME"

// Scopes: which Services the agent programs.
const (
	// ScopeLabelled makes the agent program only Services labelled
	// service.kubernetes.io/service-proxy-name=ipvs-operator (kube-proxy then leaves them alone).
	ScopeLabelled = "labelled"
	// ScopeAll makes the agent program every ClusterIP Service without that label set to another proxy: it
	// replaces kube-proxy.
	ScopeAll = "all"
)

// DetectLocalMode is how the agent tells its node's pods from every other source (--detect-local-mode): the
// guard lets only pods (and the node itself) open connections to ClusterIPs, and the masquerade rule
// rewrites the source of everything else. The modes and their names are kube-proxy's, so a cluster's
// existing kube-proxy setting carries over.
type DetectLocalMode string

// The detect-local modes.
const (
	// DetectLocalClusterCIDR: sources in --cluster-cidr are pods. For CNIs whose Nodes carry no
	// spec.podCIDRs (Calico IPAM, Cilium cluster-pool, AWS VPC CNI) when the pod ranges are known.
	DetectLocalClusterCIDR DetectLocalMode = "ClusterCIDR"
	// DetectLocalNodeCIDR: sources in this Node's spec.podCIDRs are pods (the default; what the agent
	// always did). Until the Node has pod CIDRs the agent is not ready.
	DetectLocalNodeCIDR DetectLocalMode = "NodeCIDR"
	// DetectLocalBridgeInterface: packets arriving on --pod-bridge-interface are from pods (bridge CNIs
	// such as kubenet's cbr0 or the bridge plugin's cni0).
	DetectLocalBridgeInterface DetectLocalMode = "BridgeInterface"
	// DetectLocalInterfaceNamePrefix: packets arriving on an interface whose name starts with
	// --pod-interface-name-prefix are from pods (one host veth per pod: Calico's cali, AWS VPC CNI's eni).
	DetectLocalInterfaceNamePrefix DetectLocalMode = "InterfaceNamePrefix"
)

// DetectLocalModes lists every mode, in the order the flag's help names them.
var DetectLocalModes = []DetectLocalMode{DetectLocalNodeCIDR, DetectLocalClusterCIDR, DetectLocalBridgeInterface, DetectLocalInterfaceNamePrefix}

// Defaults of the agent's settings.
const (
	// DefaultInterface is the dummy device the agent binds ClusterIPs to (kube-proxy's is kube-ipvs0; a
	// different name lets both run side by side with the labelled scope).
	DefaultInterface = "ipvs0"
	// DefaultAuditPeriod is how often the agent re-reads the kernel's IPVS tables to repair drift.
	DefaultAuditPeriod = time.Minute
	// DefaultDriftCheckPeriod is how often the agent checks, with a few O(1) kernel reads, whether the
	// kernel lost its state wholesale.
	DefaultDriftCheckPeriod = time.Second
	// DefaultMetricsPort and DefaultHealthPort are the agent's ports ON THE NODE (host network). They avoid
	// what usually listens on a node already: node-exporter 9100, Prometheus exporters in 9100-9999 that
	// often run with host networking, kubelet 10248/10250/10255, kube-proxy 10249/10256,
	// kube-controller-manager 10257, kube-scheduler 10259, Cilium 9962-9965/9879/9890, Calico 9091/9099,
	// MetalLB 7472/7473/7946.
	DefaultMetricsPort int32 = 10271
	DefaultHealthPort  int32 = 10272
	// DefaultWorkers is how many Services the agent programs concurrently.
	DefaultWorkers = 4
	// DefaultSysctlRoot is where the agent writes sysctls when not told otherwise.
	DefaultSysctlRoot = "/proc/sys"
	// DefaultDetectLocalMode keeps the behaviour the agent had before the mode could be chosen.
	DefaultDetectLocalMode = DetectLocalNodeCIDR
	// DefaultStrictARP keeps nodes from answering ARP for the ClusterIPs on the dummy device
	// (arp_ignore=1, arp_announce=2). kube-proxy leaves it off unless asked (strictARP); the agent has it on
	// because a node answering ARP for ClusterIPs draws other hosts' traffic to it, and turning it off is
	// for nodes whose other software needs the kernel's default ARP behaviour on every interface.
	DefaultStrictARP = true
)

// Minimum periods: shorter ones would spend the node's CPU re-reading the kernel.
const (
	MinAuditPeriod      = time.Second
	MinDriftCheckPeriod = 100 * time.Millisecond
)

// KubeProxyInterface is the dummy device kube-proxy's IPVS mode binds ClusterIPs to.
const KubeProxyInterface = "kube-ipvs0"

// MaxInterfaceNameLen is the kernel's limit on a link name (IFNAMSIZ less the terminating NUL).
const MaxInterfaceNameLen = 15

// Config is the agent's command line.
type Config struct {
	// NodeName is this node's name (--node-name, else $NODE_NAME), matched against endpoints' nodeName for
	// internalTrafficPolicy: Local. Required unless Cleanup.
	NodeName string
	// Interface is the dummy device that holds the ClusterIPs (--interface).
	Interface string
	// Scope is ScopeLabelled or ScopeAll (--scope).
	Scope string
	// DefaultScheduler is the IPVS scheduler of Services no ServicePolicy governs (--default-scheduler).
	DefaultScheduler v1alpha1.Scheduler
	// AuditPeriod is how often the agent re-reads the kernel and repairs drift (--audit-period).
	AuditPeriod time.Duration
	// DriftCheckPeriod is how often the drift canary runs; 0 disables it (--drift-check-period).
	DriftCheckPeriod time.Duration
	// DetectLocalMode says how pods are told from other sources (--detect-local-mode).
	DetectLocalMode DetectLocalMode
	// ClusterCIDRs are the cluster's pod CIDRs, one or more per IP family; required by, and only used with,
	// DetectLocalClusterCIDR (--cluster-cidr).
	ClusterCIDRs []netip.Prefix
	// PodBridgeInterface is the pods' bridge; required by, and only used with, DetectLocalBridgeInterface
	// (--pod-bridge-interface).
	PodBridgeInterface string
	// PodInterfaceNamePrefix starts the name of every pod's host interface; required by, and only used
	// with, DetectLocalInterfaceNamePrefix (--pod-interface-name-prefix).
	PodInterfaceNamePrefix string
	// MetricsAddress serves Prometheus metrics and /debug/ipvs over authenticated HTTPS; "0" disables it
	// (--metrics-bind-address).
	MetricsAddress string
	// HealthAddress serves /healthz and /readyz (--health-probe-bind-address).
	HealthAddress string
	// Workers is how many Services are programmed concurrently (--workers).
	Workers int
	// SysctlRoot is where the host network namespace's sysctls are writable (--sysctl-root).
	SysctlRoot string
	// StrictARP sets net.ipv4.conf.all.arp_ignore=1 and arp_announce=2 (--strict-arp).
	StrictARP bool
	// TakeoverKubeProxyIPVS makes the agent take over a node that kube-proxy programmed in IPVS mode, without
	// a gap: it adopts kube-proxy's virtual servers and ClusterIPs for the Services it serves (binding them on
	// its own device before they leave kube-ipvs0, editing virtual and real servers in place), then, once it
	// programs every Service, removes kube-proxy's leftovers: kube-ipvs0, its iptables chains, its ipsets
	// (--takeover-kube-proxy-ipvs). kube-proxy must no longer run on the node: its IPVS mode deletes every
	// virtual server it did not create on each sync.
	TakeoverKubeProxyIPVS bool
	// Cleanup makes the agent remove everything it owns from the kernel, print what it removed, then exit;
	// a running agent on the node is asked to do it (--cleanup).
	Cleanup bool
	// LoadModules makes the agent load the kernel modules it needs and exit (--load-kernel-modules): the
	// DaemonSet's init container, the only one holding CAP_SYS_MODULE, so the long-running agent needs no
	// such capability.
	LoadModules bool
}

// Default returns the agent's defaults. NodeName is left empty: it is per node.
func Default() Config {
	return Config{
		Interface:        DefaultInterface,
		Scope:            ScopeLabelled,
		DefaultScheduler: v1alpha1.DefaultScheduler,
		AuditPeriod:      DefaultAuditPeriod,
		DriftCheckPeriod: DefaultDriftCheckPeriod,
		MetricsAddress:   PortAddress(DefaultMetricsPort),
		HealthAddress:    PortAddress(DefaultHealthPort),
		Workers:          DefaultWorkers,
		SysctlRoot:       DefaultSysctlRoot,
		DetectLocalMode:  DefaultDetectLocalMode,
		StrictARP:        DefaultStrictARP,
	}
}

// PortAddress is the bind address of port on every address of the node: ":port".
func PortAddress(port int32) string {
	return ":" + strconv.Itoa(int(port))
}

// BindFlags defines the agent's flags on fs, with c's current values as their defaults; parsing fs then
// writes into c. Start from Default() (and NodeName from $NODE_NAME).
func (c *Config) BindFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.NodeName, FlagNodeName, c.NodeName, "This node's name (default $"+NodeNameEnv+"). Used for internalTrafficPolicy: Local.")
	fs.StringVar(&c.Interface, FlagInterface, c.Interface, "The dummy interface that holds the ClusterIPs.")
	fs.StringVar(&c.Scope, FlagScope, c.Scope, `Which Services to serve: "`+ScopeLabelled+`" (only those labelled `+
		v1alpha1.ServiceProxyNameLabel+"="+v1alpha1.ServiceProxyName+`, so kube-proxy can serve the rest) or "`+ScopeAll+`" (clusters without kube-proxy).`)
	fs.StringVar((*string)(&c.DefaultScheduler), FlagDefaultScheduler, string(c.DefaultScheduler), "The IPVS scheduler of Services no ServicePolicy governs.")
	fs.DurationVar(&c.AuditPeriod, FlagAuditPeriod, c.AuditPeriod, "How often to re-read the kernel and repair drift.")
	fs.DurationVar(&c.DriftCheckPeriod, FlagDriftCheckPeriod, c.DriftCheckPeriod, "How often to check, with a few O(1) kernel reads, "+
		"whether the kernel lost the agent's state wholesale (IPVS flushed, dummy interface or nftables table deleted) "+
		"and re-sync at once; 0 disables it (the audit repairs it then).")
	fs.StringVar((*string)(&c.DetectLocalMode), FlagDetectLocalMode, string(c.DetectLocalMode), fmt.Sprintf("How to tell this node's pods from other sources, "+
		"which may not open connections to ClusterIPs and are masqueraded: one of %v (kube-proxy's modes). "+
		"%s: this Node's spec.podCIDRs (not ready until it has some); %s: --%s; %s: packets from --%s; %s: packets from interfaces named --%s*.",
		DetectLocalModes, DetectLocalNodeCIDR, DetectLocalClusterCIDR, FlagClusterCIDR, DetectLocalBridgeInterface, FlagPodBridge,
		DetectLocalInterfaceNamePrefix, FlagPodIfacePrefix))
	fs.Var((*prefixList)(&c.ClusterCIDRs), FlagClusterCIDR, "Comma-separated pod CIDRs of the cluster (dual-stack: one per family). "+
		"Required with --"+FlagDetectLocalMode+"="+string(DetectLocalClusterCIDR)+", refused with the other modes.")
	fs.StringVar(&c.PodBridgeInterface, FlagPodBridge, c.PodBridgeInterface, "The pods' bridge interface (e.g. cbr0, cni0). "+
		"Required with --"+FlagDetectLocalMode+"="+string(DetectLocalBridgeInterface)+", refused with the other modes.")
	fs.StringVar(&c.PodInterfaceNamePrefix, FlagPodIfacePrefix, c.PodInterfaceNamePrefix, "The name prefix of every pod's host interface (e.g. cali, veth, eni). "+
		"Required with --"+FlagDetectLocalMode+"="+string(DetectLocalInterfaceNamePrefix)+", refused with the other modes.")
	fs.StringVar(&c.MetricsAddress, FlagMetricsAddress, c.MetricsAddress, "Address of the Prometheus metrics and /debug/ipvs endpoint (HTTPS; each request's bearer token is checked with the API server); 0 disables it.")
	fs.StringVar(&c.HealthAddress, FlagHealthAddress, c.HealthAddress, "Address of the /healthz and /readyz endpoints.")
	fs.IntVar(&c.Workers, FlagWorkers, c.Workers, "Services programmed concurrently.")
	fs.StringVar(&c.SysctlRoot, FlagSysctlRoot, c.SysctlRoot, "Where the host network namespace's sysctls are writable. "+
		"A container's /proc/sys is read-only, so the DaemonSet mounts the host's /proc/sys/net at <root>/net.")
	fs.BoolVar(&c.StrictARP, FlagStrictARP, c.StrictARP, "Keep the node from answering ARP for addresses on other interfaces, "+
		"such as the ClusterIPs on the dummy interface (net.ipv4.conf.all.arp_ignore=1, arp_announce=2).")
	fs.BoolVar(&c.TakeoverKubeProxyIPVS, FlagTakeover, c.TakeoverKubeProxyIPVS, "Take over from kube-proxy's IPVS mode on this node without a gap: adopt its virtual servers and ClusterIPs "+
		"(bound on --"+FlagInterface+" before they leave "+KubeProxyInterface+"; virtual and real servers edited in place), then, once every Service is programmed, "+
		"remove "+KubeProxyInterface+", kube-proxy's iptables chains and its ipsets. Stop kube-proxy on the node first: its IPVS mode deletes every virtual server it did not create. "+
		"Needs --"+FlagScope+"="+ScopeAll+".")
	fs.BoolVar(&c.LoadModules, FlagLoadModules, c.LoadModules, "Load the kernel modules the agent needs (needs CAP_SYS_MODULE and the host's /lib/modules), then exit. "+
		"The DaemonSet runs this as its init container, so that the agent itself runs without CAP_SYS_MODULE.")
	fs.BoolVar(&c.Cleanup, FlagCleanup, c.Cleanup, "Remove everything the agent owns from the kernel (virtual servers on its ClusterIPs, the dummy interface, its nftables table), print what was removed, and exit. "+
		"If an agent runs on this node, it is asked to do it and then programs nothing more until it ends.")
}

// Args renders c as the agent's arguments: every flag BindFlags defines, in its (sorted) order, except
// --node-name, which differs per node and reaches the agent as $NODE_NAME, and the one-shot modes
// (--cleanup, --load-kernel-modules), which are not settings; flags whose value is empty are left out,
// their default being the same. A false boolean is rendered, as its default may be true. Rendering the rest explicitly, defaults included, makes
// the DaemonSet say what the agents run with. The operator's test parses the result with BindFlags and
// compares, so a flag added to BindFlags is rendered without a change here.
func (c Config) Args() []string {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	c.BindFlags(fs) // binds to the copy: c's values become the flags' values
	var args []string
	fs.VisitAll(func(f *flag.Flag) {
		v := f.Value.String()
		if f.Name == FlagNodeName || modeFlags[f.Name] || v == "" {
			return
		}
		args = append(args, "--"+f.Name+"="+v)
	})
	return args
}

// modeFlags make the agent do one thing and exit instead of running.
var modeFlags = map[string]bool{FlagCleanup: true, FlagLoadModules: true}

// LoadModulesArgs are the arguments of the DaemonSet's init container: the module loading mode alone.
func LoadModulesArgs() []string { return []string{"--" + FlagLoadModules} }

// FlagError is one invalid setting: the flag, the value it had, and what a valid one looks like. The
// operator maps Flag to its own setting (environment variable) to report it under the name its user set.
type FlagError struct {
	Flag  string
	Value string
	// Want says what a valid value is: the fix.
	Want string
}

func (e *FlagError) Error() string {
	return fmt.Sprintf("--%s=%q: %s", e.Flag, e.Value, e.Want)
}

// Validate reports every invalid setting at once, each as a *FlagError (errors.Join).
func (c Config) Validate() error {
	errs := c.validate()
	if c.Cleanup && c.LoadModules {
		errs = append(errs, &FlagError{FlagLoadModules, "true", "cannot be combined with --" + FlagCleanup})
	}
	if c.NodeName == "" && !c.Cleanup && !c.LoadModules {
		errs = append([]error{&FlagError{FlagNodeName, c.NodeName, "required (or $" + NodeNameEnv + "): set it from the downward API (spec.nodeName)"}}, errs...)
	}
	return errors.Join(errs...)
}

// ValidateForDaemonSet is Validate without --node-name: the operator renders one pod template for every
// node, and each agent reads its own node's name from $NODE_NAME.
func (c Config) ValidateForDaemonSet() error {
	return errors.Join(c.validate()...)
}

func (c Config) validate() []error {
	var errs []error
	bad := func(name string, value any, want string) {
		errs = append(errs, &FlagError{Flag: name, Value: fmt.Sprint(value), Want: want})
	}
	if !validLinkName(c.Interface) {
		bad(FlagInterface, c.Interface, fmt.Sprintf("must be a link name of 1 to %d characters without '/', ':', '*' or spaces (IFNAMSIZ)", MaxInterfaceNameLen))
	}
	if c.Scope != ScopeLabelled && c.Scope != ScopeAll {
		bad(FlagScope, c.Scope, fmt.Sprintf("must be %q or %q", ScopeLabelled, ScopeAll))
	}
	if !slices.Contains(v1alpha1.Schedulers, c.DefaultScheduler) {
		bad(FlagDefaultScheduler, c.DefaultScheduler, fmt.Sprintf("must be one of %v", v1alpha1.Schedulers))
	}
	if c.AuditPeriod < MinAuditPeriod {
		bad(FlagAuditPeriod, c.AuditPeriod, "must be at least "+MinAuditPeriod.String())
	}
	if c.DriftCheckPeriod < 0 || (c.DriftCheckPeriod > 0 && c.DriftCheckPeriod < MinDriftCheckPeriod) {
		bad(FlagDriftCheckPeriod, c.DriftCheckPeriod, "must be 0 (off) or at least "+MinDriftCheckPeriod.String())
	}
	for _, a := range []struct{ name, addr string }{{FlagMetricsAddress, c.MetricsAddress}, {FlagHealthAddress, c.HealthAddress}} {
		if err := checkBindAddress(a.addr); err != nil {
			bad(a.name, a.addr, err.Error())
		}
	}
	if c.HealthAddress == c.MetricsAddress && c.HealthAddress != "0" && port(c.HealthAddress) != "0" {
		bad(FlagHealthAddress, c.HealthAddress, "must differ from --"+FlagMetricsAddress+" (both listen there)")
	}
	if c.TakeoverKubeProxyIPVS && c.Scope != ScopeAll {
		bad(FlagTakeover, c.TakeoverKubeProxyIPVS, "needs --"+FlagScope+"="+ScopeAll+": kube-proxy no longer runs on the node, so the agent must serve every Service it served")
	}
	if c.TakeoverKubeProxyIPVS && c.Interface == KubeProxyInterface {
		bad(FlagInterface, c.Interface, "must not be kube-proxy's device with --"+FlagTakeover+": the takeover deletes "+KubeProxyInterface)
	}
	if c.Workers < 1 {
		bad(FlagWorkers, c.Workers, "must be at least 1")
	}
	if !path.IsAbs(c.SysctlRoot) {
		bad(FlagSysctlRoot, c.SysctlRoot, "must be an absolute path")
	}
	return append(errs, c.validateDetectLocal()...)
}

// validateDetectLocal checks --detect-local-mode and the one setting each mode needs. A setting given for
// another mode is refused rather than ignored: an agent that silently ignores --cluster-cidr would refuse
// every pod on a CNI whose Nodes have no pod CIDRs, which is what the setting was meant to fix.
func (c Config) validateDetectLocal() []error {
	var errs []error
	bad := func(name string, value any, want string) {
		errs = append(errs, &FlagError{Flag: name, Value: fmt.Sprint(value), Want: want})
	}
	if !slices.Contains(DetectLocalModes, c.DetectLocalMode) {
		bad(FlagDetectLocalMode, c.DetectLocalMode, fmt.Sprintf("must be one of %v", DetectLocalModes))
	}
	mode := func(m DetectLocalMode) string { return "--" + FlagDetectLocalMode + "=" + string(m) }
	needs := func(m DetectLocalMode, name, value string, set bool, example string) {
		switch {
		case c.DetectLocalMode == m && !set:
			bad(name, value, "required with "+mode(m)+": "+example)
		case c.DetectLocalMode != m && set:
			bad(name, value, "only used with "+mode(m)+": set that mode, or drop --"+name+" (the mode is "+string(c.DetectLocalMode)+")")
		}
	}
	cidrs := (*prefixList)(&c.ClusterCIDRs).String()
	needs(DetectLocalClusterCIDR, FlagClusterCIDR, cidrs, len(c.ClusterCIDRs) > 0,
		"the cluster's pod CIDRs, comma-separated, one per IP family (e.g. 10.244.0.0/16,fd00:10:244::/56)")
	needs(DetectLocalBridgeInterface, FlagPodBridge, c.PodBridgeInterface, c.PodBridgeInterface != "", "the pods' bridge (e.g. cbr0 or cni0)")
	needs(DetectLocalInterfaceNamePrefix, FlagPodIfacePrefix, c.PodInterfaceNamePrefix, c.PodInterfaceNamePrefix != "",
		"the name prefix of the pods' host interfaces (e.g. cali or veth)")
	for _, p := range c.ClusterCIDRs {
		if !p.IsValid() || p.Addr().Is4In6() || p.Addr().Zone() != "" {
			bad(FlagClusterCIDR, cidrs, "must be CIDRs of IPv4 or IPv6 networks")
			break
		}
	}
	for _, n := range []struct{ flag, name string }{{FlagPodBridge, c.PodBridgeInterface}, {FlagPodIfacePrefix, c.PodInterfaceNamePrefix}} {
		if n.name != "" && !validLinkName(n.name) {
			bad(n.flag, n.name, fmt.Sprintf("must be a link name (or its start) of 1 to %d characters without '/', ':', '*' or spaces", MaxInterfaceNameLen))
		}
	}
	return errs
}

// validLinkName reports whether name can be (the start of) a link name: the kernel's rules (IFNAMSIZ, no
// '/', ':' or white space), and no '*', which nftables would read as a wildcard.
func validLinkName(name string) bool {
	return name != "" && len(name) <= MaxInterfaceNameLen && !strings.ContainsAny(name, "/ \t\n:*")
}

// checkBindAddress accepts what controller-runtime's servers accept: "0" (disabled) or [host]:port with a
// numeric port.
func checkBindAddress(addr string) error {
	if addr == "0" {
		return nil
	}
	_, p, err := net.SplitHostPort(addr)
	if n, perr := strconv.Atoi(p); err != nil || perr != nil || n < 0 || n > 65535 {
		return errors.New(`must be [host]:port with a port in 0-65535, or "0" to disable it`)
	}
	return nil
}

func port(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// CIDRsValue is the flag.Value of --cluster-cidr over p, for a program that sets it under another name
// (the operator's --agent-cluster-cidr and AGENT_CLUSTER_CIDR): the same syntax, read the same way.
func CIDRsValue(p *[]netip.Prefix) flag.Value { return (*prefixList)(p) }

// prefixList is a comma-separated list of CIDRs as a flag.Value; each is stored masked.
type prefixList []netip.Prefix

func (l *prefixList) String() string {
	if l == nil {
		return ""
	}
	s := make([]string, len(*l))
	for i, p := range *l {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

func (l *prefixList) Set(v string) error {
	var out []netip.Prefix
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return fmt.Errorf("%q is not a CIDR: %w", s, err)
		}
		out = append(out, p.Masked())
	}
	*l = out
	return nil
}
