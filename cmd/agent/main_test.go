package main

import (
	"flag"
	"io"
	"strings"
	"testing"
)

func TestParseFlags(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		wantErr string // a substring naming the flag and the fix; "" means valid
	}{
		{"minimal", []string{"--node-name=n1"}, ""},
		{"all options", []string{"--node-name=n1", "--scope=all", "--default-scheduler=lc", "--audit-period=30s", "--detect-local-mode=ClusterCIDR", "--cluster-cidr=10.244.0.0/16, fd00:10:244::/56"}, ""},
		{"ClusterCIDR needs CIDRs", []string{"--node-name=n1", "--detect-local-mode=ClusterCIDR"}, `--cluster-cidr="": required with --detect-local-mode=ClusterCIDR: the cluster's pod CIDRs`},
		{"CIDRs need ClusterCIDR", []string{"--node-name=n1", "--cluster-cidr=10.244.0.0/16"}, `--cluster-cidr="10.244.0.0/16": only used with --detect-local-mode=ClusterCIDR`},
		{"bridge", []string{"--node-name=n1", "--detect-local-mode=BridgeInterface", "--pod-bridge-interface=cni0"}, ""},
		{"prefix", []string{"--node-name=n1", "--detect-local-mode=InterfaceNamePrefix", "--pod-interface-name-prefix=cali"}, ""},
		{"prefix missing", []string{"--node-name=n1", "--detect-local-mode=InterfaceNamePrefix"}, `--pod-interface-name-prefix="": required with --detect-local-mode=InterfaceNamePrefix`},
		{"unknown mode", []string{"--node-name=n1", "--detect-local-mode=LocalCIDR"}, `--detect-local-mode="LocalCIDR": must be one of [NodeCIDR ClusterCIDR BridgeInterface InterfaceNamePrefix]`},
		{"cleanup needs no node", []string{"--cleanup"}, ""},
		{"no node name", nil, `--node-name="": required (or $NODE_NAME)`},
		{"bad scope", []string{"--node-name=n1", "--scope=some"}, `--scope="some": must be "labelled" or "all"`},
		{"bad scheduler", []string{"--node-name=n1", "--default-scheduler=fastest"}, `--default-scheduler="fastest": must be one of`},
		{"audit too often", []string{"--node-name=n1", "--audit-period=10ms"}, `--audit-period="10ms": must be at least 1s`},
		{"drift check off", []string{"--node-name=n1", "--drift-check-period=0"}, ""},
		{"drift check too often", []string{"--node-name=n1", "--drift-check-period=1ms"}, `--drift-check-period="1ms": must be 0 (off) or at least 100ms`},
		{"bad cidr", []string{"--node-name=n1", "--cluster-cidr=10.244.0.0"}, `invalid value "10.244.0.0" for flag -cluster-cidr: "10.244.0.0" is not a CIDR`},
		{"interface too long", []string{"--node-name=n1", "--interface=a-very-long-ifname"}, `--interface="a-very-long-ifname": must be a link name of 1 to 15`},
		{"no workers", []string{"--node-name=n1", "--workers=0"}, `--workers="0": must be at least 1`},
		{"same ports", []string{"--node-name=n1", "--metrics-bind-address=:9000", "--health-probe-bind-address=:9000"}, `--health-probe-bind-address=":9000": must differ`},
		{"metrics off", []string{"--node-name=n1", "--metrics-bind-address=0"}, ""},
		{"bad address", []string{"--node-name=n1", "--metrics-bind-address=10271"}, `--metrics-bind-address="10271": must be [host]:port`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("agent", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			_, err := parseFlags(fs, tc.args, func(string) string { return "" })
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestNodeNameFromEnvironment(t *testing.T) {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	f, err := parseFlags(fs, nil, func(k string) string { return map[string]string{"NODE_NAME": "node-a"}[k] })
	if err != nil || f.NodeName != "node-a" {
		t.Fatalf("node name %q, error %v; want node-a from $NODE_NAME", f.NodeName, err)
	}
}
