package agentconfig

import (
	"errors"
	"flag"
	"io"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ipvs-operator/ipvs-operator/api/v1alpha1"
	"github.com/ipvs-operator/ipvs-operator/controllers/agent/desired"
	"github.com/ipvs-operator/ipvs-operator/ipvs/syncer"
)

// everyFieldSet differs from Default() in every field but NodeName (never rendered), Cleanup and
// LoadModules (modes, never rendered as settings) and the settings of the other detect-local modes (see
// otherModes), so a round trip through Args proves each flag is rendered and read back.
func everyFieldSet() Config {
	return Config{
		DetectLocalMode:  DetectLocalClusterCIDR,
		Interface:        "kube-ipvs1",
		Scope:            ScopeAll,
		DefaultScheduler: v1alpha1.SchedulerMaglevHashing,
		AuditPeriod:      90 * time.Second,
		DriftCheckPeriod: 250 * time.Millisecond,
		ClusterCIDRs:     []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd00:10:244::/56")},
		MetricsAddress:   ":19100",
		HealthAddress:    "127.0.0.1:19101",
		Workers:          9,
		SysctlRoot:       "/host/proc/sys",
		StrictARP:        false,
		// TakeoverKubeProxyIPVS needs ScopeAll, set above
		TakeoverKubeProxyIPVS: true,
	}
}

// otherModes are everyFieldSet with each other detect-local mode and its setting: the settings of the
// modes exclude each other.
func otherModes() []Config {
	bridge, prefix := everyFieldSet(), everyFieldSet()
	bridge.ClusterCIDRs, bridge.DetectLocalMode, bridge.PodBridgeInterface = nil, DetectLocalBridgeInterface, "cni0"
	prefix.ClusterCIDRs, prefix.DetectLocalMode, prefix.PodInterfaceNamePrefix = nil, DetectLocalInterfaceNamePrefix, "cali"
	return []Config{bridge, prefix}
}

func parse(t *testing.T, args []string) Config {
	t.Helper()
	c := Default()
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("the agent's flags refuse %q: %v", args, err)
	}
	return c
}

func TestArgsRoundTrip(t *testing.T) {
	def, all := Default(), everyFieldSet()
	set := append([]Config{all}, otherModes()...)
	dv := reflect.ValueOf(def)
	for i := range dv.NumField() {
		name := dv.Type().Field(i).Name
		if name == "NodeName" || name == "Cleanup" || name == "LoadModules" {
			continue
		}
		changed := false
		for _, c := range set {
			changed = changed || !reflect.DeepEqual(dv.Field(i).Interface(), reflect.ValueOf(c).Field(i).Interface())
		}
		if !changed {
			t.Errorf("%s is its default in everyFieldSet() and otherModes(): set it, or the round trip proves nothing for its flag", name)
		}
	}
	for _, c := range append([]Config{def}, set...) {
		if err := c.ValidateForDaemonSet(); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(c, parse(t, c.Args()), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
			t.Errorf("Args() %q read back differently (-rendered +parsed):\n%s", c.Args(), diff)
		}
	}
	modes := all
	modes.Cleanup, modes.LoadModules = true, true
	for _, a := range modes.Args() {
		for _, f := range []string{FlagNodeName, FlagCleanup, FlagLoadModules} {
			if strings.HasPrefix(a, "--"+f+"=") {
				t.Errorf("Args() renders %s: %s is per node or a one-shot mode, not a setting", a, f)
			}
		}
	}
	if got := parse(t, LoadModulesArgs()); !got.LoadModules || got.Validate() != nil {
		t.Errorf("LoadModulesArgs() %q parse to LoadModules=%v, Validate()=%v; want a valid module-loading run", LoadModulesArgs(), got.LoadModules, got.Validate())
	}
}

func TestValidateNamesTheFlag(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		flag   string // "" means valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"no node name", func(c *Config) { c.NodeName = "" }, FlagNodeName},
		{"cleanup needs no node name", func(c *Config) { c.NodeName = ""; c.Cleanup = true }, ""},
		{"loading modules needs no node name", func(c *Config) { c.NodeName = ""; c.LoadModules = true }, ""},
		{"two modes at once", func(c *Config) { c.LoadModules, c.Cleanup = true, true }, FlagLoadModules},
		{"strict ARP off", func(c *Config) { c.StrictARP = false }, ""},
		{"takeover with scope all", func(c *Config) { c.TakeoverKubeProxyIPVS, c.Scope = true, ScopeAll }, ""},
		{"takeover needs scope all", func(c *Config) { c.TakeoverKubeProxyIPVS = true }, FlagTakeover},
		{"takeover onto kube-proxy's device", func(c *Config) {
			c.TakeoverKubeProxyIPVS, c.Scope, c.Interface = true, ScopeAll, KubeProxyInterface
		}, FlagInterface},
		{"empty interface", func(c *Config) { c.Interface = "" }, FlagInterface},
		{"interface too long", func(c *Config) { c.Interface = "sixteen-chars-xx" }, FlagInterface},
		{"scope", func(c *Config) { c.Scope = "some" }, FlagScope},
		{"scheduler", func(c *Config) { c.DefaultScheduler = "fifo" }, FlagDefaultScheduler},
		{"audit", func(c *Config) { c.AuditPeriod = 999 * time.Millisecond }, FlagAuditPeriod},
		{"drift off", func(c *Config) { c.DriftCheckPeriod = 0 }, ""},
		{"drift negative", func(c *Config) { c.DriftCheckPeriod = -time.Second }, FlagDriftCheckPeriod},
		{"drift too often", func(c *Config) { c.DriftCheckPeriod = time.Millisecond }, FlagDriftCheckPeriod},
		{"metrics off", func(c *Config) { c.MetricsAddress = "0" }, ""},
		{"metrics port too big", func(c *Config) { c.MetricsAddress = ":70000" }, FlagMetricsAddress},
		{"health no port", func(c *Config) { c.HealthAddress = "localhost" }, FlagHealthAddress},
		{"same address", func(c *Config) { c.HealthAddress = c.MetricsAddress }, FlagHealthAddress},
		{"workers", func(c *Config) { c.Workers = 0 }, FlagWorkers},
		{"sysctl root relative", func(c *Config) { c.SysctlRoot = "proc/sys" }, FlagSysctlRoot},
		{"detect-local mode unknown", func(c *Config) { c.DetectLocalMode = "nodecidr" }, FlagDetectLocalMode},
		{"ClusterCIDR without CIDRs", func(c *Config) { c.DetectLocalMode = DetectLocalClusterCIDR }, FlagClusterCIDR},
		{"ClusterCIDR dual-stack", func(c *Config) {
			c.DetectLocalMode, c.ClusterCIDRs = DetectLocalClusterCIDR, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/48")}
		}, ""},
		{"CIDRs with NodeCIDR", func(c *Config) { c.ClusterCIDRs = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")} }, FlagClusterCIDR},
		{"invalid CIDR", func(c *Config) { c.DetectLocalMode, c.ClusterCIDRs = DetectLocalClusterCIDR, []netip.Prefix{{}} }, FlagClusterCIDR},
		{"bridge", func(c *Config) { c.DetectLocalMode, c.PodBridgeInterface = DetectLocalBridgeInterface, "cbr0" }, ""},
		{"bridge missing", func(c *Config) { c.DetectLocalMode = DetectLocalBridgeInterface }, FlagPodBridge},
		{"bridge with a wildcard", func(c *Config) { c.DetectLocalMode, c.PodBridgeInterface = DetectLocalBridgeInterface, "cbr*" }, FlagPodBridge},
		{"bridge with NodeCIDR", func(c *Config) { c.PodBridgeInterface = "cbr0" }, FlagPodBridge},
		{"prefix", func(c *Config) { c.DetectLocalMode, c.PodInterfaceNamePrefix = DetectLocalInterfaceNamePrefix, "veth" }, ""},
		{"prefix missing", func(c *Config) { c.DetectLocalMode = DetectLocalInterfaceNamePrefix }, FlagPodIfacePrefix},
		{"prefix too long", func(c *Config) {
			c.DetectLocalMode, c.PodInterfaceNamePrefix = DetectLocalInterfaceNamePrefix, "sixteen-chars-xx"
		}, FlagPodIfacePrefix},
		{"prefix with BridgeInterface", func(c *Config) {
			c.DetectLocalMode, c.PodBridgeInterface, c.PodInterfaceNamePrefix = DetectLocalBridgeInterface, "cbr0", "veth"
		}, FlagPodIfacePrefix},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			c.NodeName = "n1"
			tt.mutate(&c)
			err := c.Validate()
			if tt.flag == "" {
				if err != nil {
					t.Fatalf("Validate() = %v", err)
				}
				return
			}
			var fe *FlagError
			if !errors.As(err, &fe) || fe.Flag != tt.flag || !strings.HasPrefix(err.Error(), "--"+tt.flag+"=") {
				t.Fatalf("Validate() = %v, want a *FlagError naming --%s", err, tt.flag)
			}
			if strings.Contains(tt.name, "without") || strings.Contains(tt.name, "missing") {
				// The fix is in the message: the mode that needs the setting.
				if !strings.Contains(err.Error(), "required with --"+FlagDetectLocalMode+"=") {
					t.Errorf("Validate() = %v, want it to say which mode requires --%s", err, tt.flag)
				}
			}
		})
	}
}

// The agent's other defaults live where their concern does; keep them equal to the API's.
func TestDefaultsMatchTheAPI(t *testing.T) {
	if string(Default().DefaultScheduler) != desired.DefaultScheduler {
		t.Errorf("--default-scheduler default %q, desired.DefaultScheduler %q", Default().DefaultScheduler, desired.DefaultScheduler)
	}
	api := time.Duration(v1alpha1.DefaultDrainTimeoutSeconds) * time.Second
	for name, d := range map[string]time.Duration{
		"ipvs/syncer.DefaultRetainDrainTimeout": syncer.DefaultRetainDrainTimeout,
		"desired.DefaultDrainTimeout":           desired.DefaultDrainTimeout,
	} {
		if d != api {
			t.Errorf("%s = %v, the API's default drain timeout is %v", name, d, api)
		}
	}
}
