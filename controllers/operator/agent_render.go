package operator

import (
	"errors"
	"fmt"
	"net"
	"reflect"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/ipvs-operator/ipvs-operator/api/agentconfig"
)

// Names and defaults of the agent DaemonSet the operator renders.
const (
	// AgentName names the agent's DaemonSet, its container's app label and its ServiceAccount.
	AgentName = "ipvs-operator-agent"
	// AgentServiceAccountName is the ServiceAccount the agent runs as; config/ creates it and its RBAC.
	AgentServiceAccountName = "ipvs-operator-agent"
	// AgentContainerName is the name of the agent's only container.
	AgentContainerName = "agent"
	// AgentModulesInitContainerName is the init container that loads the kernel modules, the only part of
	// the pod holding CAP_SYS_MODULE.
	AgentModulesInitContainerName = "load-kernel-modules"
	// AgentStateDir is where the agent records the node's sysctl values before changing them, so that
	// `agent --cleanup` can restore them: the host's /run/ipvs-operator (a tmpfs, emptied at reboot like the
	// sysctls themselves), at the same path in the container.
	AgentStateDir = "/run/ipvs-operator"
	// XtablesLock is iptables' lock file, mounted (created if missing, as kube-proxy's DaemonSet does) only
	// with --takeover-kube-proxy-ipvs: the takeover rewrites kube-proxy's iptables-legacy tables under it,
	// so that no other iptables-legacy writer on the node (kubelet, a CNI plugin) changes them in between.
	XtablesLock = "/run/xtables.lock"

	// AgentSysctlRoot is the agent's --sysctl-root: the host's /proc/sys/net is mounted writable at
	// AgentSysctlRoot/net (see RenderAgentDaemonSet), so net.ipv4.vs.conntrack is written to
	// AgentSysctlRoot/net/ipv4/vs/conntrack.
	AgentSysctlRoot = "/host/proc/sys"
)

// AgentConfig is everything the operator's flags decide about the agent DaemonSet.
type AgentConfig struct {
	// Namespace is the DaemonSet's namespace: the operator's own.
	Namespace string
	// Image is the agent's image (RELATED_IMAGE_AGENT in the operator's Deployment, so OLM can mirror it).
	Image string
	// ImagePullPolicy defaults to IfNotPresent.
	ImagePullPolicy corev1.PullPolicy
	// MetricsPort and HealthPort are the agent's listening ports on the node; they become the agent's
	// --metrics-bind-address and --health-probe-bind-address and the container's ports.
	MetricsPort int32
	HealthPort  int32
	// APIServerAddress, as host:port, when set, is how the agent reaches the API server instead of the
	// `kubernetes` Service's ClusterIP. Needed with ScopeAll when no kube-proxy runs: the agent itself
	// programs that ClusterIP, so it cannot depend on it to start (Cilium's k8sServiceHost does the same).
	// Rendered as KUBERNETES_SERVICE_HOST/PORT, which client-go's in-cluster config reads.
	APIServerAddress string
	// Agent is the agent's command line; start from agentconfig.Default(). The DaemonSet decides four of
	// its fields itself (see AgentFlags): the node name (per node, from the downward API), the bind
	// addresses (from MetricsPort and HealthPort) and the sysctl root (where it mounts /proc/sys/net).
	Agent agentconfig.Config
}

// WithDefaults returns cfg with every unset field set to its default; an entirely unset Agent becomes
// agentconfig.Default() (a partly set one is taken as is: a zero --drift-check-period means off).
func (cfg AgentConfig) WithDefaults() AgentConfig {
	if cfg.ImagePullPolicy == "" {
		cfg.ImagePullPolicy = corev1.PullIfNotPresent
	}
	if cfg.MetricsPort == 0 {
		cfg.MetricsPort = agentconfig.DefaultMetricsPort
	}
	if cfg.HealthPort == 0 {
		cfg.HealthPort = agentconfig.DefaultHealthPort
	}
	if reflect.ValueOf(cfg.Agent).IsZero() {
		cfg.Agent = agentconfig.Default()
	}
	return cfg
}

// AgentFlags is the agent's command line as the DaemonSet runs it: cfg.Agent with the fields the DaemonSet
// decides. RenderAgentDaemonSet renders its Args.
func (cfg AgentConfig) AgentFlags() agentconfig.Config {
	a := cfg.Agent
	a.NodeName = "" // $NODE_NAME, from the downward API
	a.Cleanup = false
	a.MetricsAddress = agentconfig.PortAddress(cfg.MetricsPort)
	a.HealthAddress = agentconfig.PortAddress(cfg.HealthPort)
	a.SysctlRoot = AgentSysctlRoot
	return a
}

// Validate reports every problem of a defaulted config at once, so the operator refuses to start with a
// config that would render a broken DaemonSet. The agent's arguments are checked by the agent's own
// validation; its errors are *agentconfig.FlagError, which name the agent's flag.
func (cfg AgentConfig) Validate() error {
	var errs []error
	if cfg.Namespace == "" {
		errs = append(errs, errors.New("agent namespace is empty"))
	}
	if cfg.Image == "" {
		errs = append(errs, errors.New("agent image is empty (set RELATED_IMAGE_AGENT or --agent-image)"))
	}
	switch cfg.ImagePullPolicy {
	case corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
	default:
		errs = append(errs, fmt.Errorf("agent image pull policy %q is not Always, IfNotPresent or Never", cfg.ImagePullPolicy))
	}
	for name, port := range map[string]int32{"metrics": cfg.MetricsPort, "health": cfg.HealthPort} {
		if port < 1 || port > 65535 {
			errs = append(errs, fmt.Errorf("agent %s port %d is not in 1-65535", name, port))
		}
	}
	if cfg.APIServerAddress != "" {
		if _, _, err := splitHostPort(cfg.APIServerAddress); err != nil {
			errs = append(errs, fmt.Errorf("agent API server address: %w", err))
		}
	}
	errs = append(errs, cfg.AgentFlags().ValidateForDaemonSet())
	return errors.Join(errs...)
}

// AgentSelectorLabels select the agent's pods. They are part of the DaemonSet's immutable selector: never
// change them.
func AgentSelectorLabels() map[string]string {
	return map[string]string{"app.kubernetes.io/name": AgentName}
}

// AgentLabels label the DaemonSet and its pods.
func AgentLabels() map[string]string {
	return map[string]string{
		"app.kubernetes.io/name":       AgentName,
		"app.kubernetes.io/component":  "agent",
		"app.kubernetes.io/part-of":    "ipvs-operator",
		"app.kubernetes.io/managed-by": FieldOwner,
	}
}

// RenderAgentDaemonSet returns the agent DaemonSet for cfg (defaulted, validated). It is pure: the reconciler
// applies its result with server-side apply, and the tests compare it with testdata/agent-daemonset.golden.yaml.
//
// Privileges, and why each is needed (the agent programs the NODE's kernel, not its own):
//   - hostNetwork: IPVS tables, the dummy device, nftables and net sysctls are per network namespace; the
//     agent must work in the host's.
//   - runAsUser 0: Kubernetes grants added capabilities only to a root process (a non-root user gets an empty
//     effective set; ambient capabilities are not offered). Netlink (IPVS, links, addresses, nftables) checks
//     CAP_NET_ADMIN, and the host's net sysctls belong to root.
//   - the agent container: NET_ADMIN only, for every netlink write and net sysctl write.
//   - the init container (`agent --load-kernel-modules`): SYS_MODULE only, to load ip_vs, its scheduler
//     modules (ip_vs_rr, ...), dummy and the nf_tables modules from the host's /lib/modules (read-only)
//     when the host has not loaded them; it exits before the agent starts, so the long-running process, the
//     one reachable over the network, can never load a module. The agent only checks that they are there
//     (/sys/module, and modules.builtin from the same read-only mount) and names any that is missing.
//   - everything else dropped, no privilege escalation, read-only root filesystem, RuntimeDefault seccomp
//     (which permits module loading only to a process holding CAP_SYS_MODULE), in both containers.
//
// /proc/sys: the agent sets net sysctls (net.ipv4.vs.conntrack, net.ipv4.vs.expire_nodest_conn,
// net.ipv4.ip_forward, arp_ignore, ...). With hostNetwork, /proc/sys/net shows the host's network namespace,
// but the container runtime mounts /proc/sys read-only in every container that is not privileged.
// kube-proxy and kube-router solve this by running privileged; Cilium runs its agent unprivileged with a
// capability list and mounts the host's /proc/sys/net (a hostPath) writable at /host/proc/sys/net, which
// resolves to the writer's network namespace, i.e. the host's. We do as Cilium: `privileged` would hand the
// agent every capability and every device for the sake of one directory. Only net/ is mounted (every sysctl
// the agent sets is net.*), and the agent is told where with --sysctl-root=/host/proc/sys.
func RenderAgentDaemonSet(cfg AgentConfig) *appsv1.DaemonSet {
	labels := AgentLabels()
	hostPathDirectory := corev1.HostPathDirectory
	hostPathDirectoryOrCreate := corev1.HostPathDirectoryOrCreate
	libModules := corev1.VolumeMount{Name: "lib-modules", MountPath: "/lib/modules", ReadOnly: true}
	// restricted is what both containers share: root for its capabilities, only those capabilities.
	restricted := func(capability corev1.Capability) *corev1.SecurityContext {
		return &corev1.SecurityContext{
			RunAsUser:                ptr.To[int64](0),
			Privileged:               ptr.To(false),
			AllowPrivilegeEscalation: ptr.To(false),
			ReadOnlyRootFilesystem:   ptr.To(true),
			Capabilities: &corev1.Capabilities{
				Add:  []corev1.Capability{capability},
				Drop: []corev1.Capability{"ALL"},
			},
		}
	}

	env := []corev1.EnvVar{{
		Name:      agentconfig.NodeNameEnv,
		ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "spec.nodeName"}},
	}}
	if cfg.APIServerAddress != "" {
		host, port, _ := splitHostPort(cfg.APIServerAddress) // Validate checked it
		env = append(env,
			corev1.EnvVar{Name: "KUBERNETES_SERVICE_HOST", Value: host},
			corev1.EnvVar{Name: "KUBERNETES_SERVICE_PORT", Value: port},
		)
	}

	agentMounts := []corev1.VolumeMount{
		libModules, // modules.builtin, to tell a built-in module from a missing one
		{Name: "host-proc-sys-net", MountPath: AgentSysctlRoot + "/net"},
		{Name: "state", MountPath: AgentStateDir},
	}
	volumes := []corev1.Volume{
		// No type check: hosts without loadable modules (everything built in) may lack it.
		{Name: "lib-modules", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/lib/modules"}}},
		{Name: "host-proc-sys-net", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/proc/sys/net", Type: &hostPathDirectory}}},
		{Name: "state", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: AgentStateDir, Type: &hostPathDirectoryOrCreate}}},
	}
	if cfg.Agent.TakeoverKubeProxyIPVS {
		// Read-only is enough: flock(2) needs only an open descriptor.
		agentMounts = append(agentMounts, corev1.VolumeMount{Name: "xtables-lock", MountPath: XtablesLock, ReadOnly: true})
		volumes = append(volumes, corev1.Volume{Name: "xtables-lock", VolumeSource: corev1.VolumeSource{
			HostPath: &corev1.HostPathVolumeSource{Path: XtablesLock, Type: ptr.To(corev1.HostPathFileOrCreate)}}})
	}

	return &appsv1.DaemonSet{
		TypeMeta: metav1.TypeMeta{APIVersion: appsv1.SchemeGroupVersion.String(), Kind: "DaemonSet"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      AgentName,
			Namespace: cfg.Namespace,
			Labels:    labels,
		},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: AgentSelectorLabels()},
			// One agent per node and no surge: two agents must never program one kernel at once. A restart
			// costs no traffic: the kernel keeps forwarding, and the new agent adopts the kernel's state.
			UpdateStrategy: appsv1.DaemonSetUpdateStrategy{
				Type: appsv1.RollingUpdateDaemonSetStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDaemonSet{
					MaxUnavailable: ptr.To(intstr.FromInt32(1)),
					MaxSurge:       ptr.To(intstr.FromInt32(0)),
				},
			},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{
					Labels:      labels,
					Annotations: map[string]string{"kubectl.kubernetes.io/default-container": AgentContainerName},
				},
				Spec: corev1.PodSpec{
					ServiceAccountName: AgentServiceAccountName,
					HostNetwork:        true,
					DNSPolicy:          corev1.DNSDefault,
					// The node's Services stop working without it: schedule it before, and evict it after,
					// ordinary pods.
					PriorityClassName: "system-node-critical",
					// Every node, whatever its taints (control-plane, NotReady, unschedulable...).
					Tolerations:     []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
					NodeSelector:    map[string]string{corev1.LabelOSStable: "linux"},
					SecurityContext: &corev1.PodSecurityContext{SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
					InitContainers: []corev1.Container{{
						Name:                     AgentModulesInitContainerName,
						Image:                    cfg.Image,
						ImagePullPolicy:          cfg.ImagePullPolicy,
						Command:                  []string{"/agent"},
						Args:                     agentconfig.LoadModulesArgs(),
						SecurityContext:          restricted("SYS_MODULE"),
						VolumeMounts:             []corev1.VolumeMount{libModules},
						TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
					}},
					Containers: []corev1.Container{{
						Name:            AgentContainerName,
						Image:           cfg.Image,
						ImagePullPolicy: cfg.ImagePullPolicy,
						Command:         []string{"/agent"},
						// The agent's own flags render them (agentconfig), and TestRenderedArgsParseAsConfigured
						// (cmd/agent) parses them back with the agent's parseFlags.
						Args: cfg.AgentFlags().Args(),
						Env:  env,
						// With hostNetwork the ports are the node's; hostPort equals containerPort (the API
						// server would default it so), written out to make that visible.
						Ports: []corev1.ContainerPort{
							{Name: "metrics", ContainerPort: cfg.MetricsPort, HostPort: cfg.MetricsPort, Protocol: corev1.ProtocolTCP},
							{Name: "health", ContainerPort: cfg.HealthPort, HostPort: cfg.HealthPort, Protocol: corev1.ProtocolTCP},
						},
						ReadinessProbe: &corev1.Probe{
							ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromString("health")}},
							PeriodSeconds: 5,
						},
						LivenessProbe: &corev1.Probe{
							ProbeHandler:        corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("health")}},
							InitialDelaySeconds: 15,
							PeriodSeconds:       10,
							FailureThreshold:    3,
						},
						// Requests only: a node-critical proxy must not be throttled or OOM-killed by a limit
						// (kube-proxy sets none either). Memory grows with the cluster's Services and endpoints.
						Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
							corev1.ResourceCPU:    resource.MustParse("100m"),
							corev1.ResourceMemory: resource.MustParse("128Mi"),
						}},
						SecurityContext:          restricted("NET_ADMIN"),
						VolumeMounts:             agentMounts,
						TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
					}},
					Volumes: volumes,
				},
			},
		},
	}
}

// splitHostPort splits host:port, requiring both.
func splitHostPort(addr string) (host, port string, err error) {
	host, port, err = net.SplitHostPort(addr)
	if err != nil {
		return "", "", err
	}
	if host == "" {
		return "", "", fmt.Errorf("%q has no host", addr)
	}
	if n, perr := strconv.Atoi(port); perr != nil || n < 1 || n > 65535 {
		return "", "", fmt.Errorf("%q has no valid port", addr)
	}
	return host, port, nil
}
