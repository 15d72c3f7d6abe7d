package main

import (
	"errors"
	"flag"
	"io"
	"io/fs"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/ipvs-operator/ipvs-operator/api/agentconfig"
	"github.com/ipvs-operator/ipvs-operator/controllers/operator"
)

// agent returns the agent's defaults changed by set.
func agent(set func(*agentconfig.Config)) agentconfig.Config {
	a := agentconfig.Default()
	set(&a)
	return a
}

func TestFlagsAndEnvironment(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		args    []string
		want    operator.AgentConfig
		wantErr string // substring of the error of bindFlags, parsing or agentConfig
	}{
		{
			name: "defaults with only the image and namespace from the environment",
			env:  map[string]string{"RELATED_IMAGE_AGENT": "reg/agent:1", "POD_NAMESPACE": "ipvs-operator-system"},
			want: operator.AgentConfig{
				Namespace: "ipvs-operator-system", Image: "reg/agent:1", ImagePullPolicy: corev1.PullIfNotPresent,
				MetricsPort: 10271, HealthPort: 10272, Agent: agentconfig.Default(),
			},
		},
		{
			name: "every agent setting from the environment; RELATED_IMAGE_AGENT wins over AGENT_IMAGE",
			env: map[string]string{
				"POD_NAMESPACE": "ns", "RELATED_IMAGE_AGENT": "mirror/agent@sha256:1", "AGENT_IMAGE": "upstream/agent:1",
				"AGENT_IMAGE_PULL_POLICY": "Always", "AGENT_SCOPE": "all", "AGENT_DEFAULT_SCHEDULER": "wlc",
				"AGENT_INTERFACE": "kube-ipvs1", "AGENT_AUDIT_PERIOD": "30s", "AGENT_METRICS_PORT": "20001",
				"AGENT_HEALTH_PORT": "20002", "AGENT_APISERVER_ADDRESS": "10.0.0.1:6443", "AGENT_DRIFT_CHECK_PERIOD": "0",
				"AGENT_STRICT_ARP": "false",
			},
			want: operator.AgentConfig{
				Namespace: "ns", Image: "mirror/agent@sha256:1", ImagePullPolicy: corev1.PullAlways,
				MetricsPort: 20001, HealthPort: 20002, APIServerAddress: "10.0.0.1:6443",
				Agent: agent(func(a *agentconfig.Config) {
					a.Interface, a.Scope, a.DefaultScheduler, a.AuditPeriod, a.DriftCheckPeriod = "kube-ipvs1", "all", "wlc", 30*time.Second, 0
					a.StrictARP = false
				}),
			},
		},
		{
			name: "AGENT_IMAGE when RELATED_IMAGE_AGENT is unset; flags override the environment",
			env:  map[string]string{"AGENT_IMAGE": "upstream/agent:1", "AGENT_SCOPE": "all", "POD_NAMESPACE": "env-ns"},
			args: []string{"--agent-scope=labelled", "--operator-namespace=flag-ns", "--agent-audit-period=5m"},
			want: operator.AgentConfig{
				Namespace: "flag-ns", Image: "upstream/agent:1", ImagePullPolicy: corev1.PullIfNotPresent,
				MetricsPort: 10271, HealthPort: 10272,
				Agent: agent(func(a *agentconfig.Config) { a.AuditPeriod = 5 * time.Minute }),
			},
		},
		{
			name: "detect-local mode ClusterCIDR from the environment, dual-stack",
			env: map[string]string{"RELATED_IMAGE_AGENT": "a", "POD_NAMESPACE": "ns",
				"AGENT_DETECT_LOCAL_MODE": "ClusterCIDR", "AGENT_CLUSTER_CIDR": "10.244.0.0/16, fd00:10:244::/56"},
			want: operator.AgentConfig{
				Namespace: "ns", Image: "a", ImagePullPolicy: corev1.PullIfNotPresent, MetricsPort: 10271, HealthPort: 10272,
				Agent: agent(func(a *agentconfig.Config) {
					a.DetectLocalMode = agentconfig.DetectLocalClusterCIDR
					a.ClusterCIDRs = []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd00:10:244::/56")}
				}),
			},
		},
		{
			name: "detect-local mode InterfaceNamePrefix by flag",
			env:  map[string]string{"RELATED_IMAGE_AGENT": "a", "POD_NAMESPACE": "ns", "AGENT_DETECT_LOCAL_MODE": "ClusterCIDR"},
			args: []string{"--agent-detect-local-mode=InterfaceNamePrefix", "--agent-pod-interface-name-prefix=cali"},
			want: operator.AgentConfig{
				Namespace: "ns", Image: "a", ImagePullPolicy: corev1.PullIfNotPresent, MetricsPort: 10271, HealthPort: 10272,
				Agent: agent(func(a *agentconfig.Config) {
					a.DetectLocalMode, a.PodInterfaceNamePrefix = agentconfig.DetectLocalInterfaceNamePrefix, "cali"
				}),
			},
		},
		{
			name:    "ClusterCIDR without a CIDR names the operator's setting and the fix",
			env:     map[string]string{"RELATED_IMAGE_AGENT": "a", "POD_NAMESPACE": "ns", "AGENT_DETECT_LOCAL_MODE": "ClusterCIDR"},
			wantErr: `AGENT_CLUSTER_CIDR (--agent-cluster-cidr): --cluster-cidr="": required with --detect-local-mode=ClusterCIDR`,
		},
		{
			name:    "a CIDR that does not parse",
			env:     map[string]string{"RELATED_IMAGE_AGENT": "a", "POD_NAMESPACE": "ns", "AGENT_CLUSTER_CIDR": "10.244.0.0"},
			wantErr: `environment variable AGENT_CLUSTER_CIDR="10.244.0.0"`,
		},
		{
			name:    "an unknown mode",
			env:     map[string]string{"RELATED_IMAGE_AGENT": "a", "POD_NAMESPACE": "ns", "AGENT_DETECT_LOCAL_MODE": "Auto"},
			wantErr: `AGENT_DETECT_LOCAL_MODE (--agent-detect-local-mode): --detect-local-mode="Auto": must be one of`,
		},
		{
			name:    "an environment variable that does not parse is an error, not a silent default",
			env:     map[string]string{"RELATED_IMAGE_AGENT": "a", "POD_NAMESPACE": "ns", "AGENT_AUDIT_PERIOD": "every minute"},
			wantErr: "AGENT_AUDIT_PERIOD",
		},
		{
			name:    "a strict ARP setting that is not a boolean",
			env:     map[string]string{"RELATED_IMAGE_AGENT": "a", "POD_NAMESPACE": "ns", "AGENT_STRICT_ARP": "sometimes"},
			wantErr: "AGENT_STRICT_ARP",
		},
		{
			name:    "a bad port in the environment",
			env:     map[string]string{"RELATED_IMAGE_AGENT": "a", "POD_NAMESPACE": "ns", "AGENT_METRICS_PORT": "metrics"},
			wantErr: "AGENT_METRICS_PORT",
		},
		{
			name:    "no image",
			env:     map[string]string{"POD_NAMESPACE": "ns"},
			wantErr: "RELATED_IMAGE_AGENT",
		},
		{
			name:    "bad scope",
			env:     map[string]string{"RELATED_IMAGE_AGENT": "a", "POD_NAMESPACE": "ns", "AGENT_SCOPE": "everything"},
			wantErr: `AGENT_SCOPE (--agent-scope): --scope="everything": must be "labelled" or "all"`,
		},
		{
			name:    "bad scheduler flag",
			env:     map[string]string{"RELATED_IMAGE_AGENT": "a", "POD_NAMESPACE": "ns"},
			args:    []string{"--agent-default-scheduler=random"},
			wantErr: `AGENT_DEFAULT_SCHEDULER (--agent-default-scheduler): --default-scheduler="random": must be one of`,
		},
		{
			name:    "audit period the agent would refuse",
			env:     map[string]string{"RELATED_IMAGE_AGENT": "a", "POD_NAMESPACE": "ns", "AGENT_AUDIT_PERIOD": "500ms"},
			wantErr: `AGENT_AUDIT_PERIOD (--agent-audit-period): --audit-period="500ms": must be at least 1s`,
		},
		{
			name:    "drift check period the agent would refuse",
			env:     map[string]string{"RELATED_IMAGE_AGENT": "a", "POD_NAMESPACE": "ns", "AGENT_DRIFT_CHECK_PERIOD": "10ms"},
			wantErr: `AGENT_DRIFT_CHECK_PERIOD (--agent-drift-check-period): --drift-check-period="10ms"`,
		},
		{
			name:    "interface name the kernel would refuse",
			env:     map[string]string{"RELATED_IMAGE_AGENT": "a", "POD_NAMESPACE": "ns", "AGENT_INTERFACE": "a-very-long-ifname"},
			wantErr: `AGENT_INTERFACE (--agent-interface): --interface="a-very-long-ifname"`,
		},
		{
			name:    "one port for metrics and health",
			env:     map[string]string{"RELATED_IMAGE_AGENT": "a", "POD_NAMESPACE": "ns", "AGENT_HEALTH_PORT": "10271"},
			wantErr: `AGENT_HEALTH_PORT (--agent-health-port): --health-probe-bind-address=":10271": must differ`,
		},
		{
			name:    "port beyond int32",
			env:     map[string]string{"RELATED_IMAGE_AGENT": "a", "POD_NAMESPACE": "ns"},
			args:    []string{"--agent-health-port=4294977296"},
			wantErr: "1-65535",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			flags := flag.NewFlagSet("operator", flag.ContinueOnError)
			flags.SetOutput(io.Discard)
			opts, err := bindFlags(flags, func(k string) string { return tt.env[k] })
			if err == nil {
				err = flags.Parse(tt.args)
			}
			if err == nil {
				err = opts.resolveNamespace(func(string) ([]byte, error) { return nil, fs.ErrNotExist })
			}
			var cfg operator.AgentConfig
			if err == nil {
				cfg, err = opts.agentConfig()
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, cfg, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
				t.Errorf("agent config (-want +got):\n%s", diff)
			}
		})
	}
}

func TestManagerFlagDefaults(t *testing.T) {
	flags := flag.NewFlagSet("operator", flag.ContinueOnError)
	opts, err := bindFlags(flags, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if err := flags.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if !opts.leaderElect || opts.probeAddr != ":8081" || opts.metricsAddr != "0" || !opts.secureMetrics || opts.enableHTTP2 {
		t.Errorf("manager defaults = %+v, want leader election on, probes on :8081, metrics off until asked, HTTPS, no HTTP/2", opts)
	}
}

func TestNamespaceFromServiceAccount(t *testing.T) {
	o := &options{}
	err := o.resolveNamespace(func(path string) ([]byte, error) {
		if path != serviceAccountNamespaceFile {
			t.Errorf("read %s", path)
		}
		return []byte("from-sa\n"), nil
	})
	if err != nil || o.namespace != "from-sa" {
		t.Fatalf("namespace %q, error %v", o.namespace, err)
	}

	o = &options{}
	if err := o.resolveNamespace(func(string) ([]byte, error) { return nil, fs.ErrNotExist }); !errors.Is(err, fs.ErrNotExist) ||
		!strings.Contains(err.Error(), "POD_NAMESPACE") {
		t.Fatalf("error = %v, want one wrapping fs.ErrNotExist and naming POD_NAMESPACE", err)
	}
}

// TestGlobalFlagsDoNotClash binds everything main binds onto the global flag set, where controller-runtime
// has already registered -kubeconfig: a duplicate flag name would panic here.
func TestGlobalFlagsDoNotClash(t *testing.T) {
	if flag.CommandLine.Lookup("kubeconfig") == nil {
		t.Fatalf("controller-runtime's -kubeconfig flag is not registered; this test no longer proves anything")
	}
	if _, err := bindFlags(flag.CommandLine, func(string) string { return "" }); err != nil {
		t.Fatal(err)
	}
	(&zap.Options{}).BindFlags(flag.CommandLine)
	for _, name := range []string{"leader-elect", "metrics-bind-address", "health-probe-bind-address", "zap-log-level", "agent-image"} {
		if flag.CommandLine.Lookup(name) == nil {
			t.Errorf("flag -%s is not registered", name)
		}
	}
}
