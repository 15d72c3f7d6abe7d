package main

import (
	"flag"
	"io"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/ipvs-operator/ipvs-operator/api/agentconfig"
	"github.com/ipvs-operator/ipvs-operator/api/v1alpha1"
	"github.com/ipvs-operator/ipvs-operator/controllers/operator"
	"github.com/ipvs-operator/ipvs-operator/ipvs/host"
)

// TestRenderedArgsParseAsConfigured is the operator-agent contract: for each operator setting, the
// DaemonSet the operator renders is run through the agent's own parseFlags (its flag set, $NODE_NAME from
// the rendered downward API, its validation), and the agent must read exactly what the operator was
// configured with. It fails if the operator renders an argument the agent rejects or reads differently.
func TestRenderedArgsParseAsConfigured(t *testing.T) {
	agent := func(set func(*agentconfig.Config)) agentconfig.Config {
		a := agentconfig.Default()
		set(&a)
		return a
	}
	tests := []struct {
		name string
		cfg  operator.AgentConfig
	}{
		{"defaults", operator.AgentConfig{}},
		{"every setting changed", operator.AgentConfig{
			MetricsPort: 19100, HealthPort: 19101, APIServerAddress: "[fd00::10]:6443",
			Agent: agent(func(a *agentconfig.Config) {
				a.Interface, a.Scope, a.DefaultScheduler = "kube-ipvs1", agentconfig.ScopeAll, v1alpha1.SchedulerMaglevHashing
				a.AuditPeriod, a.DriftCheckPeriod, a.Workers = 90*time.Second, 250*time.Millisecond, 9
				a.DetectLocalMode = agentconfig.DetectLocalClusterCIDR
				a.ClusterCIDRs = []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd00:10:244::/56")}
			}),
		}},
		{"pods by bridge", operator.AgentConfig{Agent: agent(func(a *agentconfig.Config) {
			a.DetectLocalMode, a.PodBridgeInterface = agentconfig.DetectLocalBridgeInterface, "cni0"
		})}},
		{"pods by interface name prefix", operator.AgentConfig{Agent: agent(func(a *agentconfig.Config) {
			a.DetectLocalMode, a.PodInterfaceNamePrefix = agentconfig.DetectLocalInterfaceNamePrefix, "cali"
		})}},
		{"drift canary off", operator.AgentConfig{Agent: agent(func(a *agentconfig.Config) { a.DriftCheckPeriod = 0 })}},
		{"odd but valid durations", operator.AgentConfig{Agent: agent(func(a *agentconfig.Config) {
			a.AuditPeriod, a.DriftCheckPeriod = 1500*time.Millisecond+time.Nanosecond, 100*time.Millisecond
		})}},
		{"least common scheduler and low ports", operator.AgentConfig{MetricsPort: 1, HealthPort: 2,
			Agent: agent(func(a *agentconfig.Config) { a.DefaultScheduler = v1alpha1.Schedulers[len(v1alpha1.Schedulers)-1] })}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.Namespace, cfg.Image = "ipvs-operator-system", "example.test/agent:1"
			cfg = cfg.WithDefaults()
			if err := cfg.Validate(); err != nil {
				t.Fatalf("the operator refuses the test's config: %v", err)
			}
			c := renderedAgent(t, operator.RenderAgentDaemonSet(cfg))
			env := downwardEnv(t, c, "node-a")

			fs := flag.NewFlagSet("agent", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			got, err := parseFlags(fs, c.Args, func(k string) string { return env[k] })
			if err != nil {
				t.Fatalf("the agent refuses the rendered arguments %q: %v", c.Args, err)
			}
			want := cfg.AgentFlags()
			want.NodeName = "node-a"
			if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
				t.Errorf("the agent reads %q differently from the operator's config (-configured +parsed):\n%s", c.Args, diff)
			}
			// The container's ports are the ones the agent listens on.
			if p := c.Ports; len(p) != 2 || agentconfig.PortAddress(p[0].ContainerPort) != got.MetricsAddress ||
				agentconfig.PortAddress(p[1].ContainerPort) != got.HealthAddress {
				t.Errorf("container ports %+v, agent listens on %s and %s", p, got.MetricsAddress, got.HealthAddress)
			}
		})
	}
}

// renderedAgent returns the DaemonSet's agent container.
func renderedAgent(t *testing.T, ds *appsv1.DaemonSet) corev1.Container {
	t.Helper()
	for _, c := range ds.Spec.Template.Spec.Containers {
		if c.Name == operator.AgentContainerName {
			if len(c.Command) != 1 || c.Command[0] != "/agent" {
				t.Fatalf("command %q does not run the agent", c.Command)
			}
			return c
		}
	}
	t.Fatalf("no %s container rendered", operator.AgentContainerName)
	return corev1.Container{}
}

// downwardEnv resolves the container's environment as the kubelet would on node: literal values, and
// spec.nodeName from the downward API. Any other source fails the test, as it would need a resolver here.
func downwardEnv(t *testing.T, c corev1.Container, node string) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName":
			env[e.Name] = node
		default:
			t.Fatalf("env %s comes from %+v, which this test cannot resolve", e.Name, e.ValueFrom)
		}
	}
	if env[agentconfig.NodeNameEnv] != node {
		t.Fatalf("the rendered env does not give the agent its node's name as $%s", agentconfig.NodeNameEnv)
	}
	return env
}

// TestRenderedInitContainerLoadsModules: the DaemonSet's init container runs the agent's module-loading mode
// (parsed by the agent's own flags, valid without a node name), and the state directory the agent records
// sysctls in is the one the DaemonSet mounts from the host.
func TestRenderedInitContainerLoadsModules(t *testing.T) {
	cfg := operator.AgentConfig{Namespace: "ipvs-operator-system", Image: "example.test/agent:1"}.WithDefaults()
	ds := operator.RenderAgentDaemonSet(cfg)
	inits := ds.Spec.Template.Spec.InitContainers
	if len(inits) != 1 || len(inits[0].Command) != 1 || inits[0].Command[0] != "/agent" {
		t.Fatalf("init containers %+v, want one running /agent", inits)
	}
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	got, err := parseFlags(fs, inits[0].Args, func(string) string { return "" })
	if err != nil || !got.LoadModules || got.Cleanup {
		t.Fatalf("the agent reads the init container's %q as LoadModules=%v Cleanup=%v, %v; want the module-loading mode", inits[0].Args, got.LoadModules, got.Cleanup, err)
	}
	mounted := false
	for _, m := range renderedAgent(t, ds).VolumeMounts {
		mounted = mounted || (m.MountPath == host.StateDir && !m.ReadOnly)
	}
	if !mounted {
		t.Errorf("the agent records sysctls in %s, which the DaemonSet does not mount writable", host.StateDir)
	}
}
