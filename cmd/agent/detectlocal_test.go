package main

import (
	"strings"
	"testing"

	"github.com/ipvs-operator/ipvs-operator/api/agentconfig"
	"github.com/ipvs-operator/ipvs-operator/ipvs"
	"github.com/ipvs-operator/ipvs-operator/ipvs/nftrules"
)

// Each --detect-local-mode programs its own pod match in the guard.
func TestPodMatchOptions(t *testing.T) {
	tests := []struct {
		name string
		set  func(*flags)
		want string // in the IPv4 guard rule
	}{
		{"NodeCIDR", func(*flags) {}, "ip saddr != @podcidrs4 reject"},
		{"ClusterCIDR", func(f *flags) { f.DetectLocalMode = agentconfig.DetectLocalClusterCIDR }, "ip saddr != @podcidrs4 reject"},
		{"BridgeInterface", func(f *flags) {
			f.DetectLocalMode, f.PodBridgeInterface = agentconfig.DetectLocalBridgeInterface, "cni0"
		}, `iifname != "cni0" reject`},
		{"InterfaceNamePrefix", func(f *flags) {
			f.DetectLocalMode, f.PodInterfaceNamePrefix = agentconfig.DetectLocalInterfaceNamePrefix, "cali"
		}, `iifname != "cali*" reject`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := agentconfig.Default()
			tt.set(&f)
			if got := nftrules.Render(nil, ipvs.RuleElements{}, podMatchOptions(f)...); !strings.Contains(got, tt.want) {
				t.Errorf("rules do not match pods with %q:\n%s", tt.want, got)
			}
		})
	}
}
