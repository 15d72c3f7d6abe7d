package operator

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/ipvs-operator/ipvs-operator/api/agentconfig"
	"github.com/ipvs-operator/ipvs-operator/api/v1alpha1"
	"github.com/ipvs-operator/ipvs-operator/test/golden"
)

func testAgentConfig() AgentConfig {
	return AgentConfig{Namespace: "ipvs-operator-system", Image: "ghcr.io/ipvs-operator/agent:v0.1.0"}.WithDefaults()
}

// customAgent differs from the agent's defaults wherever the operator lets its user choose.
func customAgent() agentconfig.Config {
	a := agentconfig.Default()
	a.Interface, a.Scope, a.DefaultScheduler = "kube-ipvs1", agentconfig.ScopeAll, v1alpha1.SchedulerMaglevHashing
	a.AuditPeriod, a.DriftCheckPeriod = 90*time.Second, 0
	a.StrictARP = false // a false boolean must be rendered: its default is true
	return a
}

func agentContainer(t *testing.T, ds *appsv1.DaemonSet) corev1.Container {
	t.Helper()
	if n := len(ds.Spec.Template.Spec.Containers); n != 1 {
		t.Fatalf("rendered %d containers, want 1", n)
	}
	return ds.Spec.Template.Spec.Containers[0]
}

func envValue(c corev1.Container, name string) (corev1.EnvVar, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e, true
		}
	}
	return corev1.EnvVar{}, false
}

func TestRenderAgentDaemonSet(t *testing.T) {
	tests := []struct {
		name  string
		cfg   AgentConfig
		check func(t *testing.T, ds *appsv1.DaemonSet)
	}{
		{
			name: "defaults: identity, labels and selector",
			cfg:  testAgentConfig(),
			check: func(t *testing.T, ds *appsv1.DaemonSet) {
				if ds.Name != AgentName || ds.Namespace != "ipvs-operator-system" {
					t.Errorf("rendered %s/%s, want ipvs-operator-system/%s", ds.Namespace, ds.Name, AgentName)
				}
				if ds.APIVersion != "apps/v1" || ds.Kind != "DaemonSet" {
					t.Errorf("type meta %s %s, want apps/v1 DaemonSet (server-side apply needs it)", ds.APIVersion, ds.Kind)
				}
				sel := labels.SelectorFromSet(ds.Spec.Selector.MatchLabels)
				if !sel.Matches(labels.Set(ds.Spec.Template.Labels)) {
					t.Errorf("selector %v does not match the pod template's labels %v", sel, ds.Spec.Template.Labels)
				}
				if got := ds.Labels["app.kubernetes.io/name"]; got != "ipvs-operator-agent" {
					t.Errorf("app.kubernetes.io/name = %q", got)
				}
			},
		},
		{
			name: "defaults: host networking, scheduling on every node",
			cfg:  testAgentConfig(),
			check: func(t *testing.T, ds *appsv1.DaemonSet) {
				spec := ds.Spec.Template.Spec
				// Default: the node's resolver. With scope all the agent programs the cluster DNS Service's
				// ClusterIP itself, so it must never depend on it (ClusterFirstWithHostNet would).
				if !spec.HostNetwork || spec.DNSPolicy != corev1.DNSDefault {
					t.Errorf("hostNetwork=%v dnsPolicy=%s, want true, Default", spec.HostNetwork, spec.DNSPolicy)
				}
				if spec.ServiceAccountName != "ipvs-operator-agent" {
					t.Errorf("serviceAccountName = %q", spec.ServiceAccountName)
				}
				if spec.PriorityClassName != "system-node-critical" {
					t.Errorf("priorityClassName = %q", spec.PriorityClassName)
				}
				if diff := cmp.Diff([]corev1.Toleration{{Operator: corev1.TolerationOpExists}}, spec.Tolerations); diff != "" {
					t.Errorf("tolerations (-want +got):\n%s", diff)
				}
				us := ds.Spec.UpdateStrategy
				if us.Type != appsv1.RollingUpdateDaemonSetStrategyType || us.RollingUpdate == nil ||
					*us.RollingUpdate.MaxUnavailable != intstr.FromInt32(1) || *us.RollingUpdate.MaxSurge != intstr.FromInt32(0) {
					t.Errorf("update strategy = %+v, want RollingUpdate maxUnavailable 1 maxSurge 0", us)
				}
			},
		},
		{
			name: "defaults: command, args, env, ports, probes",
			cfg:  testAgentConfig(),
			check: func(t *testing.T, ds *appsv1.DaemonSet) {
				c := agentContainer(t, ds)
				if c.Image != "ghcr.io/ipvs-operator/agent:v0.1.0" || c.ImagePullPolicy != corev1.PullIfNotPresent {
					t.Errorf("image %q pull policy %q", c.Image, c.ImagePullPolicy)
				}
				if diff := cmp.Diff([]string{"/agent"}, c.Command); diff != "" {
					t.Errorf("command (-want +got):\n%s", diff)
				}
				wantArgs := []string{
					"--audit-period=1m0s",
					"--default-scheduler=rr",
					"--detect-local-mode=NodeCIDR",
					"--drift-check-period=1s",
					"--health-probe-bind-address=:10272",
					"--interface=ipvs0",
					"--metrics-bind-address=:10271",
					"--scope=labelled",
					"--strict-arp=true",
					"--sysctl-root=/host/proc/sys",
					"--takeover-kube-proxy-ipvs=false",
					"--workers=4",
				}
				if diff := cmp.Diff(wantArgs, c.Args); diff != "" {
					t.Errorf("args (-want +got):\n%s", diff)
				}
				nodeName, ok := envValue(c, "NODE_NAME")
				if !ok || nodeName.ValueFrom == nil || nodeName.ValueFrom.FieldRef == nil || nodeName.ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
					t.Errorf("NODE_NAME env = %+v, want the downward API's spec.nodeName", nodeName)
				}
				if _, ok := envValue(c, "KUBERNETES_SERVICE_HOST"); ok {
					t.Errorf("KUBERNETES_SERVICE_HOST set without an API server address")
				}
				wantPorts := []corev1.ContainerPort{
					{Name: "metrics", ContainerPort: 10271, HostPort: 10271, Protocol: corev1.ProtocolTCP},
					{Name: "health", ContainerPort: 10272, HostPort: 10272, Protocol: corev1.ProtocolTCP},
				}
				if diff := cmp.Diff(wantPorts, c.Ports); diff != "" {
					t.Errorf("ports (-want +got):\n%s", diff)
				}
				if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" ||
					c.ReadinessProbe.HTTPGet.Port != intstr.FromString("health") {
					t.Errorf("readiness probe = %+v, want GET /readyz on the health port", c.ReadinessProbe)
				}
				if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" ||
					c.LivenessProbe.HTTPGet.Port != intstr.FromString("health") {
					t.Errorf("liveness probe = %+v, want GET /healthz on the health port", c.LivenessProbe)
				}
				if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
					t.Errorf("resources = %+v, want cpu and memory requests", c.Resources)
				}
				if len(c.Resources.Limits) != 0 {
					t.Errorf("limits = %v, want none on a node-critical proxy", c.Resources.Limits)
				}
			},
		},
		{
			name: "defaults: least privilege that still reaches the host's kernel",
			cfg:  testAgentConfig(),
			check: func(t *testing.T, ds *appsv1.DaemonSet) {
				spec := ds.Spec.Template.Spec
				if len(spec.InitContainers) != 1 {
					t.Fatalf("init containers = %d, want the module loader", len(spec.InitContainers))
				}
				init := spec.InitContainers[0]
				if init.Name != AgentModulesInitContainerName || init.Image != agentContainer(t, ds).Image ||
					!cmp.Equal(init.Command, []string{"/agent"}) || !cmp.Equal(init.Args, []string{"--load-kernel-modules"}) {
					t.Errorf("init container %s runs %s %q %q, want the agent's image loading modules", init.Name, init.Image, init.Command, init.Args)
				}
				for _, c := range []struct {
					name string
					sc   *corev1.SecurityContext
					caps []corev1.Capability
				}{
					// The long-running agent, reachable over the network, can never load a module.
					{"agent", agentContainer(t, ds).SecurityContext, []corev1.Capability{"NET_ADMIN"}},
					{"init", init.SecurityContext, []corev1.Capability{"SYS_MODULE"}},
				} {
					sc := c.sc
					if sc == nil || sc.RunAsUser == nil || *sc.RunAsUser != 0 {
						t.Fatalf("%s: securityContext = %+v, want runAsUser 0", c.name, sc)
					}
					if sc.Privileged == nil || *sc.Privileged {
						t.Errorf("%s: privileged = %v, want explicitly false", c.name, sc.Privileged)
					}
					if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
						t.Errorf("%s: allowPrivilegeEscalation = %v, want false", c.name, sc.AllowPrivilegeEscalation)
					}
					if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
						t.Errorf("%s: readOnlyRootFilesystem = %v, want true", c.name, sc.ReadOnlyRootFilesystem)
					}
					want := &corev1.Capabilities{Add: c.caps, Drop: []corev1.Capability{"ALL"}}
					if diff := cmp.Diff(want, sc.Capabilities); diff != "" {
						t.Errorf("%s: capabilities (-want +got):\n%s", c.name, diff)
					}
				}
				pod := spec.SecurityContext
				if pod == nil || pod.SeccompProfile == nil || pod.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
					t.Errorf("pod securityContext = %+v, want RuntimeDefault seccomp", pod)
				}
				if diff := cmp.Diff([]corev1.VolumeMount{{Name: "lib-modules", MountPath: "/lib/modules", ReadOnly: true}}, init.VolumeMounts); diff != "" {
					t.Errorf("init container mounts (-want +got):\n%s", diff)
				}
			},
		},
		{
			name: "defaults: /lib/modules read-only, the host's /proc/sys/net and /run/ipvs-operator writable",
			cfg:  testAgentConfig(),
			check: func(t *testing.T, ds *appsv1.DaemonSet) {
				mounts := map[string]corev1.VolumeMount{}
				for _, m := range agentContainer(t, ds).VolumeMounts {
					mounts[m.Name] = m
				}
				vols := map[string]corev1.Volume{}
				for _, v := range ds.Spec.Template.Spec.Volumes {
					vols[v.Name] = v
				}
				for name, want := range map[string]struct {
					hostPath, mountPath string
					readOnly            bool
				}{
					"lib-modules":       {"/lib/modules", "/lib/modules", true},
					"host-proc-sys-net": {"/proc/sys/net", "/host/proc/sys/net", false},
					"state":             {"/run/ipvs-operator", "/run/ipvs-operator", false},
				} {
					v, ok := vols[name]
					if !ok || v.HostPath == nil || v.HostPath.Path != want.hostPath {
						t.Errorf("volume %s = %+v, want hostPath %s", name, v, want.hostPath)
					}
					m, ok := mounts[name]
					if !ok || m.MountPath != want.mountPath || m.ReadOnly != want.readOnly {
						t.Errorf("mount %s = %+v, want %s readOnly=%v", name, m, want.mountPath, want.readOnly)
					}
				}
				if len(vols) != 3 || len(mounts) != 3 {
					t.Errorf("volumes %v mounts %v, want exactly lib-modules, host-proc-sys-net and state", vols, mounts)
				}
			},
		},
		{
			name: "takeover: iptables' lock file mounted read-only, created if missing",
			cfg: func() AgentConfig {
				c := testAgentConfig()
				c.Agent.TakeoverKubeProxyIPVS, c.Agent.Scope = true, agentconfig.ScopeAll
				return c
			}(),
			check: func(t *testing.T, ds *appsv1.DaemonSet) {
				var mount *corev1.VolumeMount
				for i, m := range agentContainer(t, ds).VolumeMounts {
					if m.Name == "xtables-lock" {
						mount = &agentContainer(t, ds).VolumeMounts[i]
					}
				}
				if mount == nil || mount.MountPath != "/run/xtables.lock" || !mount.ReadOnly {
					t.Errorf("xtables-lock mount = %+v, want /run/xtables.lock read-only", mount)
				}
				for _, v := range ds.Spec.Template.Spec.Volumes {
					if v.Name == "xtables-lock" {
						if v.HostPath == nil || v.HostPath.Path != "/run/xtables.lock" || v.HostPath.Type == nil || *v.HostPath.Type != corev1.HostPathFileOrCreate {
							t.Errorf("xtables-lock volume = %+v, want hostPath /run/xtables.lock FileOrCreate", v)
						}
						return
					}
				}
				t.Errorf("no xtables-lock volume")
			},
		},
		{
			name: "custom config reaches args, ports and pull policy",
			cfg: AgentConfig{
				Namespace: "elsewhere", Image: "registry.local/agent@sha256:abc", ImagePullPolicy: corev1.PullAlways,
				MetricsPort: 19100, HealthPort: 19101, Agent: customAgent(),
			}.WithDefaults(),
			check: func(t *testing.T, ds *appsv1.DaemonSet) {
				c := agentContainer(t, ds)
				if ds.Namespace != "elsewhere" || c.Image != "registry.local/agent@sha256:abc" || c.ImagePullPolicy != corev1.PullAlways {
					t.Errorf("namespace %q image %q pull policy %q", ds.Namespace, c.Image, c.ImagePullPolicy)
				}
				wantArgs := []string{
					"--audit-period=1m30s",
					"--default-scheduler=mh",
					"--detect-local-mode=NodeCIDR",
					"--drift-check-period=0s",
					"--health-probe-bind-address=:19101",
					"--interface=kube-ipvs1",
					"--metrics-bind-address=:19100",
					"--scope=all",
					"--strict-arp=false",
					"--sysctl-root=/host/proc/sys",
					"--takeover-kube-proxy-ipvs=false",
					"--workers=4",
				}
				if diff := cmp.Diff(wantArgs, c.Args); diff != "" {
					t.Errorf("args (-want +got):\n%s", diff)
				}
				if c.Ports[0].ContainerPort != 19100 || c.Ports[0].HostPort != 19100 ||
					c.Ports[1].ContainerPort != 19101 || c.Ports[1].HostPort != 19101 {
					t.Errorf("ports = %+v", c.Ports)
				}
			},
		},
		{
			name: "API server address becomes the in-cluster config's env (IPv6 too)",
			cfg:  func() AgentConfig { c := testAgentConfig(); c.APIServerAddress = "[fd00::10]:6443"; return c }(),
			check: func(t *testing.T, ds *appsv1.DaemonSet) {
				c := agentContainer(t, ds)
				host, _ := envValue(c, "KUBERNETES_SERVICE_HOST")
				port, _ := envValue(c, "KUBERNETES_SERVICE_PORT")
				if host.Value != "fd00::10" || port.Value != "6443" {
					t.Errorf("KUBERNETES_SERVICE_HOST=%q PORT=%q, want fd00::10 and 6443", host.Value, port.Value)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.cfg.Validate(); err != nil {
				t.Fatalf("test config is invalid: %v", err)
			}
			tt.check(t, RenderAgentDaemonSet(tt.cfg))
		})
	}
}

func TestRenderAgentDaemonSetIsPure(t *testing.T) {
	a, b := RenderAgentDaemonSet(testAgentConfig()), RenderAgentDaemonSet(testAgentConfig())
	if diff := cmp.Diff(a, b); diff != "" {
		t.Fatalf("two renders of one config differ:\n%s", diff)
	}
	a.Labels["mutated"] = "yes"
	a.Spec.Template.Labels["mutated"] = "yes"
	a.Spec.Selector.MatchLabels["mutated"] = "yes"
	if c := RenderAgentDaemonSet(testAgentConfig()); c.Labels["mutated"] != "" || c.Spec.Selector.MatchLabels["mutated"] != "" ||
		c.Spec.Template.Labels["mutated"] != "" {
		t.Fatalf("a render shares maps with a later render")
	}
	if _, ok := b.Spec.Template.Labels["mutated"]; ok {
		t.Fatalf("metadata and template labels share one map")
	}
}

func TestAgentConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*AgentConfig)
		wantErr []string // substrings of the joined error; none means valid
	}{
		{name: "defaults are valid", mutate: func(*AgentConfig) {}},
		{name: "no image", mutate: func(c *AgentConfig) { c.Image = "" }, wantErr: []string{"RELATED_IMAGE_AGENT"}},
		{name: "no namespace", mutate: func(c *AgentConfig) { c.Namespace = "" }, wantErr: []string{"namespace"}},
		{name: "bad scope", mutate: func(c *AgentConfig) { c.Agent.Scope = "some" }, wantErr: []string{`--scope="some"`}},
		{name: "bad scheduler", mutate: func(c *AgentConfig) { c.Agent.DefaultScheduler = "fifo" }, wantErr: []string{`--default-scheduler="fifo"`}},
		{name: "interface too long", mutate: func(c *AgentConfig) { c.Agent.Interface = "a-very-long-ifname" }, wantErr: []string{"IFNAMSIZ"}},
		{name: "audit period too short", mutate: func(c *AgentConfig) { c.Agent.AuditPeriod = time.Millisecond }, wantErr: []string{"--audit-period"}},
		{name: "same ports", mutate: func(c *AgentConfig) { c.HealthPort = c.MetricsPort }, wantErr: []string{`--health-probe-bind-address=":10271": must differ`}},
		{name: "node name is per node, not the DaemonSet's", mutate: func(c *AgentConfig) { c.Agent.NodeName = "" }},
		{name: "port out of range", mutate: func(c *AgentConfig) { c.MetricsPort = 70000 }, wantErr: []string{"metrics port 70000"}},
		{name: "bad pull policy", mutate: func(c *AgentConfig) { c.ImagePullPolicy = "Sometimes" }, wantErr: []string{"Sometimes"}},
		{name: "API server address without port", mutate: func(c *AgentConfig) { c.APIServerAddress = "10.0.0.1" }, wantErr: []string{"API server address"}},
		{name: "API server address ok", mutate: func(c *AgentConfig) { c.APIServerAddress = "api.example:6443" }},
		{
			name:    "every problem at once",
			mutate:  func(c *AgentConfig) { c.Image = ""; c.Agent.Scope = "x" },
			wantErr: []string{"image", `--scope="x"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testAgentConfig()
			tt.mutate(&cfg)
			err := cfg.Validate()
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want an error mentioning %q", tt.wantErr)
			}
			for _, s := range tt.wantErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("Validate() = %v, want it to mention %q", err, s)
				}
			}
		})
	}
}

// TestAgentDaemonSetGolden pins the exact object the operator applies (the apply configuration, status
// dropped). Run `go test ./controllers/operator -run Golden -update` after an intended change and review the
// diff of testdata/agent-daemonset.golden.yaml.
func TestAgentDaemonSetGolden(t *testing.T) {
	ac, err := agentApplyConfiguration(RenderAgentDaemonSet(testAgentConfig()))
	if err != nil {
		t.Fatal(err)
	}
	u, ok := ac.(interface{ UnstructuredContent() map[string]any })
	if !ok {
		t.Fatalf("apply configuration %T exposes no content", ac)
	}
	if _, hasStatus := u.UnstructuredContent()["status"]; hasStatus {
		t.Errorf("the apply configuration carries a status")
	}
	got, err := yaml.Marshal(u.UnstructuredContent())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", "agent-daemonset.golden.yaml")
	want := golden.Check(t, path, got)
	// The golden file must stay a valid DaemonSet.
	var back appsv1.DaemonSet
	if err := yaml.UnmarshalStrict(want, &back); err != nil {
		t.Errorf("%s is not a valid DaemonSet: %v", path, err)
	}
}
