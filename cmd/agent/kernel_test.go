package main

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/ipvs-operator/ipvs-operator/ipvs/host"
)

func TestServesIPv6(t *testing.T) {
	v4, v6 := netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd00:10:244::/56")
	node := func(podCIDRs []string, ips ...string) *corev1.Node {
		n := &corev1.Node{Spec: corev1.NodeSpec{PodCIDRs: podCIDRs}}
		for _, ip := range ips {
			n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: ip})
		}
		return n
	}
	tests := []struct {
		name  string
		cidrs []netip.Prefix
		node  *corev1.Node
		want  bool
	}{
		{"IPv4-only node", nil, node([]string{"10.244.1.0/24"}, "192.168.1.10"), false},
		{"IPv4 cluster CIDR, no node", []netip.Prefix{v4}, nil, false},
		{"dual-stack cluster CIDRs", []netip.Prefix{v4, v6}, nil, true},
		{"dual-stack pod CIDRs", nil, node([]string{"10.244.1.0/24", "fd00:10:244:1::/64"}, "192.168.1.10"), true},
		{"IPv6 node IP, no pod CIDRs (Calico IPAM)", nil, node(nil, "192.168.1.10", "fd00::10"), true},
		{"IPv6 external address only", nil, &corev1.Node{Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: "192.168.1.10"}, {Type: corev1.NodeExternalIP, Address: "2001:db8::1"}}}}, false},
		{"legacy podCIDR field", nil, &corev1.Node{Spec: corev1.NodeSpec{PodCIDR: "fd00:10:244:1::/64"}}, true},
	}
	for _, tt := range tests {
		if got := servesIPv6(tt.cidrs, tt.node); got != tt.want {
			t.Errorf("%s: servesIPv6 = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// moduleDirs is a module tree with every required module listed and /sys/module showing the loaded ones.
func moduleDirs(t *testing.T, loaded ...string) *host.Loader {
	t.Helper()
	root := t.TempDir()
	mods, sys := filepath.Join(root, "modules"), filepath.Join(root, "sys")
	var dep strings.Builder
	for _, m := range host.RequiredModules {
		dep.WriteString("kernel/" + m + ".ko:\n")
	}
	for _, d := range []string{mods, sys} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(mods, "modules.dep"), []byte(dep.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(mods, "kernel"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, m := range host.RequiredModules {
		if err := os.WriteFile(filepath.Join(mods, "kernel", m+".ko"), []byte("\x7fELF"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range loaded {
		if err := os.Mkdir(filepath.Join(sys, m), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return &host.Loader{ModulesDir: mods, SysModuleDir: sys, Syscalls: sysModule(sys)}
}

// sysModule is a kernel whose module loading only makes the module show in /sys/module.
type sysModule string

func (s sysModule) FinitModule(f *os.File, _ string, _ int) error {
	return os.Mkdir(filepath.Join(string(s), strings.TrimSuffix(filepath.Base(f.Name()), ".ko")), 0o755)
}

func (s sysModule) InitModule([]byte, string) error { return errors.New("not expected") }

// TestModulesWithoutSysModule: the agent starts when the init container loaded the modules, and fails
// naming the missing module otherwise; the init container's mode loads them.
func TestModulesWithoutSysModule(t *testing.T) {
	allButNq := make([]string, 0, len(host.RequiredModules))
	for _, m := range host.RequiredModules {
		if m != "ip_vs_nq" {
			allButNq = append(allButNq, m)
		}
	}
	if err := checkModules(moduleDirs(t, host.RequiredModules...)); err != nil {
		t.Errorf("every module loaded: %v", err)
	}
	if err := checkModules(moduleDirs(t, allButNq...)); err != nil {
		t.Errorf("only a scheduler missing must be a warning: %v", err)
	}
	var withoutDummy []string
	for _, m := range host.RequiredModules {
		if m != "dummy" {
			withoutDummy = append(withoutDummy, m)
		}
	}
	err := checkModules(moduleDirs(t, withoutDummy...))
	if err == nil || !strings.Contains(err.Error(), "kernel modules dummy are not loaded") || !strings.Contains(err.Error(), "--load-kernel-modules") {
		t.Errorf("dummy missing: %v, want an error naming dummy and the init container", err)
	}

	l := moduleDirs(t)
	var out bytes.Buffer
	if err := loadModules(l, &out); err != nil {
		t.Fatalf("loadModules: %v\n%s", err, out.String())
	}
	if err := checkModules(l); err != nil {
		t.Errorf("after the init container's load: %v", err)
	}
	if !strings.Contains(out.String(), "kernel modules loaded: ip_vs ") || !strings.Contains(out.String(), "inserted ip_vs (kernel/ip_vs.ko, finit_module)") {
		t.Errorf("output %q", out.String())
	}
}
