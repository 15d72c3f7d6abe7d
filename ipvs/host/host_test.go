package host_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
	"github.com/ipvs-operator/ipvs-operator/ipvs/fake"
	"github.com/ipvs-operator/ipvs-operator/ipvs/host"
)

// modulesTree writes a module tree shaped like Debian 6.1's (depmod output) and returns a Loader on it
// whose Insert records load order instead of calling finit_module.
func modulesTree(t *testing.T, files map[string]string, loaded ...string) (*host.Loader, *[]string) {
	t.Helper()
	root := t.TempDir()
	mods := filepath.Join(root, "lib", "modules", "6.1.0-99-amd64")
	sys := filepath.Join(root, "sys", "module")
	for _, d := range []string{mods, sys} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(mods, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range loaded {
		if err := os.Mkdir(filepath.Join(sys, m), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var order []string
	l := &host.Loader{
		ModulesDir:   mods,
		SysModuleDir: sys,
		Modprobe:     filepath.Join(root, "no-modprobe"),
		Insert: func(path, params string) error {
			name := strings.TrimSuffix(filepath.Base(path), ".ko")
			if strings.Contains(name, "fails") {
				return unix.ENODEV
			}
			if name == "already" {
				return unix.EEXIST
			}
			if params != "" {
				name += " " + params
			}
			order = append(order, name)
			// What the kernel does: the module now shows in /sys/module.
			return os.MkdirAll(filepath.Join(sys, strings.Fields(strings.ReplaceAll(name, "-", "_"))[0]), 0o755)
		},
	}
	return l, &order
}

const debianDep = `kernel/net/netfilter/ipvs/ip_vs.ko: kernel/net/netfilter/nf_conntrack.ko kernel/net/ipv6/netfilter/nf_defrag_ipv6.ko kernel/net/ipv4/netfilter/nf_defrag_ipv4.ko kernel/lib/libcrc32c.ko
kernel/net/netfilter/ipvs/ip_vs_rr.ko: kernel/net/netfilter/ipvs/ip_vs.ko kernel/net/netfilter/nf_conntrack.ko kernel/net/ipv6/netfilter/nf_defrag_ipv6.ko kernel/net/ipv4/netfilter/nf_defrag_ipv4.ko kernel/lib/libcrc32c.ko
kernel/net/netfilter/nf_conntrack.ko: kernel/net/ipv6/netfilter/nf_defrag_ipv6.ko kernel/net/ipv4/netfilter/nf_defrag_ipv4.ko kernel/lib/libcrc32c.ko
kernel/net/ipv6/netfilter/nf_defrag_ipv6.ko:
kernel/net/ipv4/netfilter/nf_defrag_ipv4.ko:
kernel/lib/libcrc32c.ko:
kernel/crypto/crc32c_generic.ko:
kernel/arch/x86/crypto/crc32c-intel-fails.ko:
kernel/drivers/net/dummy.ko:
kernel/net/netfilter/ipvs/ip_vs_mh.ko.xz: kernel/net/netfilter/ipvs/ip_vs.ko kernel/net/netfilter/nf_conntrack.ko kernel/net/ipv6/netfilter/nf_defrag_ipv6.ko kernel/net/ipv4/netfilter/nf_defrag_ipv4.ko kernel/lib/libcrc32c.ko
kernel/net/netfilter/ipvs/ip_vs_sed-fails.ko: kernel/net/netfilter/ipvs/ip_vs.ko
kernel/net/netfilter/already.ko:
`

func TestLoad(t *testing.T) {
	base := []string{"libcrc32c", "nf_defrag_ipv4", "nf_defrag_ipv6", "nf_conntrack", "ip_vs"}
	tests := []struct {
		name     string
		files    map[string]string
		loaded   []string
		load     []string
		want     []string // insert order
		failed   []string
		failedIs error
	}{
		{
			name:  "dependencies first, softdep through its alias before libcrc32c",
			files: map[string]string{"modules.dep": debianDep, "modules.softdep": "softdep libcrc32c pre: crc32c\n", "modules.alias": "alias crc32c crc32c_generic\nalias crc32c crc32c_intel_fails\n"},
			load:  []string{"ip_vs_rr"},
			want:  append([]string{"crc32c_generic"}, append(slices.Clone(base), "ip_vs_rr")...),
		},
		{
			name:  "no modules.softdep: crc32c_generic before libcrc32c all the same",
			files: map[string]string{"modules.dep": debianDep},
			load:  []string{"ip-vs"}, // dashes are underscores
			want:  append([]string{"crc32c_generic"}, base...),
		},
		{
			name:   "loaded and built-in modules are skipped",
			files:  map[string]string{"modules.dep": debianDep, "modules.builtin": "kernel/lib/libcrc32c.ko\nkernel/crypto/crc32c_generic.ko\n"},
			loaded: []string{"nf_conntrack", "nf_defrag_ipv4", "nf_defrag_ipv6"},
			load:   []string{"ip_vs"},
			want:   []string{"ip_vs"},
		},
		{
			name:   "already loaded everything: nothing to do",
			files:  map[string]string{"modules.dep": debianDep},
			loaded: []string{"ip_vs", "dummy"},
			load:   []string{"ip_vs", "dummy"},
		},
		{
			name:  "module parameters: no dummy0",
			files: map[string]string{"modules.dep": debianDep},
			load:  []string{"dummy"},
			want:  []string{"dummy numdummies=0"},
		},
		{
			name:  "EEXIST is success",
			files: map[string]string{"modules.dep": debianDep},
			load:  []string{"already"},
		},
		{
			name:     "unknown module",
			files:    map[string]string{"modules.dep": debianDep},
			load:     []string{"nope", "dummy"},
			want:     []string{"dummy numdummies=0"},
			failed:   []string{"nope"},
			failedIs: fs.ErrNotExist,
		},
		{
			name:     "compressed module without modprobe",
			files:    map[string]string{"modules.dep": debianDep},
			loaded:   base,
			load:     []string{"ip_vs_mh"},
			failed:   []string{"ip_vs_mh"},
			failedIs: unix.ENOEXEC,
		},
		{
			name:     "insert fails",
			files:    map[string]string{"modules.dep": debianDep},
			loaded:   base,
			load:     []string{"ip_vs_sed_fails"},
			failed:   []string{"ip_vs_sed_fails"},
			failedIs: unix.ENODEV,
		},
		{
			name:     "no module tree: only loaded modules are fine",
			loaded:   []string{"ip_vs"},
			load:     []string{"ip_vs", "dummy"},
			failed:   []string{"dummy"},
			failedIs: host.ErrNoModuleTree,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, order := modulesTree(t, tt.files, tt.loaded...)
			err := l.Load(tt.load...)
			if !reflect.DeepEqual(*order, tt.want) && (len(*order) > 0 || len(tt.want) > 0) {
				t.Errorf("insert order = %v, want %v", *order, tt.want)
			}
			if tt.failed == nil {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				return
			}
			var me *host.ModuleError
			if !errors.As(err, &me) {
				t.Fatalf("Load err = %v, want *ModuleError", err)
			}
			if !reflect.DeepEqual(me.Modules(), tt.failed) {
				t.Errorf("failed = %v, want %v", me.Modules(), tt.failed)
			}
			if !errors.Is(err, tt.failedIs) {
				t.Errorf("err = %v, want it to wrap %v", err, tt.failedIs)
			}
			for _, m := range tt.failed {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not name %s", err, m)
				}
			}
		})
	}
}

func TestLoadRequiredSplitsSchedulers(t *testing.T) {
	l, _ := modulesTree(t, map[string]string{"modules.dep": "kernel/drivers/net/dummy.ko:\n"}, host.RequiredModules...)
	// Everything is loaded except two schedulers and one nft module.
	for _, m := range []string{"ip_vs_mh", "ip_vs_nq", "nft_fib_inet"} {
		if err := os.Remove(filepath.Join(l.SysModuleDir, m)); err != nil {
			t.Fatal(err)
		}
	}
	missing, err := l.LoadRequired()
	if !reflect.DeepEqual(missing, []string{"ip_vs_mh", "ip_vs_nq"}) {
		t.Errorf("missing schedulers = %v", missing)
	}
	var me *host.ModuleError
	if !errors.As(err, &me) || !reflect.DeepEqual(me.Modules(), []string{"nft_fib_inet"}) {
		t.Errorf("err = %v, want only nft_fib_inet fatal", err)
	}

	if err := os.Mkdir(filepath.Join(l.SysModuleDir, "nft_fib_inet"), 0o755); err != nil {
		t.Fatal(err)
	}
	if missing, err := l.LoadRequired(); err != nil || len(missing) != 2 {
		t.Errorf("with only schedulers missing: %v, %v; want a warning and no error", missing, err)
	}
}

// sysctlTree is a fake /proc/sys with each name set to its value.
func sysctlTree(t *testing.T, values map[string]string) (root string, read func(string) string, write func(string, string)) {
	t.Helper()
	root = t.TempDir()
	write = func(name, v string) {
		p := filepath.Join(root, strings.ReplaceAll(name, ".", "/"))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	read = func(name string) string {
		b, err := os.ReadFile(filepath.Join(root, strings.ReplaceAll(name, ".", "/")))
		if err != nil {
			return "<" + err.Error() + ">"
		}
		return strings.TrimSpace(string(b))
	}
	for n, v := range values {
		write(n, v)
	}
	return root, read, write
}

func TestApplySysctls(t *testing.T) {
	all := host.PlanSysctls(host.SysctlOptions{Kernel: host.KernelVersion{Major: 5, Minor: 4}, StrictARP: true, IPv6: true})
	values := map[string]string{}
	for _, s := range all {
		values[s.Name] = "0"
	}
	values["net.ipv4.ip_forward"] = "1" // already right: not reported
	values["net.ipv4.vs.conn_reuse_mode"] = "1"
	root, read, write := sysctlTree(t, values)
	s := host.Sysctl{Root: root}
	changed, err := s.Apply(all)
	if err != nil {
		t.Fatal(err)
	}
	if len(changed) != len(all)-1 || !slices.Contains(changed, "net.ipv4.vs.conntrack: 0 -> 1") {
		t.Errorf("changed = %v", changed)
	}
	for _, st := range all {
		if got := read(st.Name); got != st.Value {
			t.Errorf("%s = %q, want %s", st.Name, got, st.Value)
		}
	}
	if changed, err := s.Apply(all); err != nil || len(changed) != 0 {
		t.Errorf("second Apply = %v, %v; want nothing to change", changed, err)
	}

	// Without ip_vs the vs settings fail with a hint, and the others are still written.
	write("net.ipv4.conf.all.arp_ignore", "0")
	if err := os.RemoveAll(filepath.Join(root, "net", "ipv4", "vs")); err != nil {
		t.Fatal(err)
	}
	changed, err = s.Apply(all)
	if !slices.Contains(changed, "net.ipv4.conf.all.arp_ignore: 0 -> 1") {
		t.Errorf("changed = %v, want arp_ignore", changed)
	}
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "load ip_vs first") {
		t.Errorf("err = %v, want missing net.ipv4.vs with a hint", err)
	}
}

func TestParseKernelRelease(t *testing.T) {
	tests := []struct {
		release string
		want    host.KernelVersion
		wantErr bool
	}{
		{"6.1.0-56-amd64", host.KernelVersion{Major: 6, Minor: 1}, false},
		{"5.4.0-1103-aws", host.KernelVersion{Major: 5, Minor: 4}, false},
		{"4.19.91-27.al7.x86_64", host.KernelVersion{Major: 4, Minor: 19}, false},
		{"5.8+", host.KernelVersion{Major: 5, Minor: 8}, false},
		{"6.18", host.KernelVersion{Major: 6, Minor: 18}, false},
		{"linux", host.KernelVersion{}, true},
		{"x.1", host.KernelVersion{}, true},
	}
	for _, tt := range tests {
		got, err := host.ParseKernelRelease(tt.release)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseKernelRelease(%q) = %v, %v; want %v, error %v", tt.release, got, err, tt.want, tt.wantErr)
		}
	}
}

// TestPlanSysctls is kube-proxy's decision for conn_reuse_mode by kernel version, IPv6 forwarding only for a
// node that serves IPv6, and strict ARP as a setting.
func TestPlanSysctls(t *testing.T) {
	base := []string{"net.ipv4.vs.conntrack=1", "net.ipv4.vs.expire_nodest_conn=1", "net.ipv4.vs.expire_quiescent_template=1", "net.ipv4.ip_forward=1"}
	arp := []string{"net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2"}
	reuse := []string{"net.ipv4.vs.conn_reuse_mode=0"}
	v6 := []string{"net.ipv6.conf.all.forwarding=1"}
	join := func(parts ...[]string) []string { return slices.Concat(parts...) }
	tests := []struct {
		name string
		o    host.SysctlOptions
		want []string
	}{
		{"4.0: conn_reuse_mode does not exist yet", host.SysctlOptions{Kernel: host.KernelVersion{Major: 4, Minor: 0}, StrictARP: true}, join(base, arp)},
		{"4.1: first kernel with the sysctl", host.SysctlOptions{Kernel: host.KernelVersion{Major: 4, Minor: 1}, StrictARP: true}, join(base, reuse, arp)},
		{"4.19", host.SysctlOptions{Kernel: host.KernelVersion{Major: 4, Minor: 19}, StrictARP: true}, join(base, reuse, arp)},
		{"5.4 dual-stack", host.SysctlOptions{Kernel: host.KernelVersion{Major: 5, Minor: 4}, StrictARP: true, IPv6: true}, join(base, reuse, arp, v6)},
		{"5.8: last kernel with the stall", host.SysctlOptions{Kernel: host.KernelVersion{Major: 5, Minor: 8}, StrictARP: true}, join(base, reuse, arp)},
		{"5.9: fixed, left alone", host.SysctlOptions{Kernel: host.KernelVersion{Major: 5, Minor: 9}, StrictARP: true}, join(base, arp)},
		{"6.1 IPv4-only: no IPv6 forwarding", host.SysctlOptions{Kernel: host.KernelVersion{Major: 6, Minor: 1}, StrictARP: true}, join(base, arp)},
		{"6.1 IPv6", host.SysctlOptions{Kernel: host.KernelVersion{Major: 6, Minor: 1}, StrictARP: true, IPv6: true}, join(base, arp, v6)},
		{"6.12 strict ARP off", host.SysctlOptions{Kernel: host.KernelVersion{Major: 6, Minor: 12}}, base},
		{"3.10 strict ARP off, IPv6", host.SysctlOptions{Kernel: host.KernelVersion{Major: 3, Minor: 10}, IPv6: true}, join(base, v6)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, s := range host.PlanSysctls(tt.o) {
				got = append(got, s.Name+"="+s.Value)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("PlanSysctls(%+v) =\n %v\nwant\n %v", tt.o, got, tt.want)
			}
		})
	}
}

// TestRestoreSysctls: the first Apply records the node's values, a restarted agent's Apply keeps that
// record, and Restore puts back what still holds the agent's value, never forwarding, then forgets.
func TestRestoreSysctls(t *testing.T) {
	plan := host.PlanSysctls(host.SysctlOptions{Kernel: host.KernelVersion{Major: 5, Minor: 4}, StrictARP: true})
	root, read, write := sysctlTree(t, map[string]string{
		"net.ipv4.vs.conntrack": "0", "net.ipv4.vs.expire_nodest_conn": "0", "net.ipv4.vs.expire_quiescent_template": "0",
		"net.ipv4.vs.conn_reuse_mode": "1", "net.ipv4.ip_forward": "0",
		"net.ipv4.conf.all.arp_ignore": "0", "net.ipv4.conf.all.arp_announce": "1",
	})
	s := host.Sysctl{Root: root, StateFile: filepath.Join(t.TempDir(), "run", "state.json")}
	if _, err := s.Apply(plan); err != nil {
		t.Fatal(err)
	}
	// A restart: everything already holds the agent's values, and the record must survive.
	if changed, err := s.Apply(plan); err != nil || len(changed) != 0 {
		t.Fatalf("second Apply = %v, %v", changed, err)
	}
	write("net.ipv4.conf.all.arp_announce", "0") // an administrator's change since
	report, err := s.Restore()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"net.ipv4.vs.conntrack": "0", "net.ipv4.vs.expire_nodest_conn": "0", "net.ipv4.vs.expire_quiescent_template": "0",
		"net.ipv4.vs.conn_reuse_mode": "1", "net.ipv4.conf.all.arp_ignore": "0",
		"net.ipv4.conf.all.arp_announce": "0", // theirs: left
		"net.ipv4.ip_forward":            "1", // the pod network needs it: never restored
	}
	for name, v := range want {
		if got := read(name); got != v {
			t.Errorf("after Restore %s = %s, want %s", name, got, v)
		}
	}
	if !slices.Contains(report, "restored sysctl net.ipv4.vs.conntrack: 1 -> 0") ||
		!slices.ContainsFunc(report, func(l string) bool { return strings.HasPrefix(l, "sysctl net.ipv4.conf.all.arp_announce left at 0") }) {
		t.Errorf("report = %q", report)
	}
	if _, err := os.Stat(s.StateFile); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("state file after Restore: %v, want it removed", err)
	}
	if report, err := s.Restore(); err != nil || len(report) != 0 {
		t.Errorf("second Restore = %q, %v; want nothing", report, err)
	}
}

func TestCheckRequired(t *testing.T) {
	l, order := modulesTree(t, map[string]string{
		"modules.dep":     debianDep,
		"modules.builtin": "kernel/net/netfilter/nf_tables.ko\nkernel/net/netfilter/nft_ct.ko\n",
	}, "ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_lc", "ip_vs_wlc", "ip_vs_sh", "ip_vs_dh", "ip_vs_mh", "ip_vs_sed",
		"nf_conntrack", "dummy", "nft_masq", "nft_nat", "nft_chain_nat", "nft_reject_inet")
	missing, err := l.CheckRequired()
	if !reflect.DeepEqual(missing, []string{"ip_vs_nq"}) {
		t.Errorf("missing schedulers = %v", missing)
	}
	var me *host.ModuleError
	if !errors.As(err, &me) || !reflect.DeepEqual(me.Modules(), []string{"nft_fib_inet"}) || !errors.Is(err, host.ErrNotLoaded) {
		t.Errorf("err = %v, want nft_fib_inet not loaded (nf_tables and nft_ct are built in)", err)
	}
	if len(*order) != 0 {
		t.Errorf("a check loaded %v", *order)
	}
	// Without a module tree, a module /sys/module does not show may be built in: said so, not guessed.
	l.ModulesDir = filepath.Join(t.TempDir(), "none")
	if _, err := l.CheckRequired(); !errors.Is(err, host.ErrNoModuleTree) {
		t.Errorf("without a tree: %v, want ErrNoModuleTree", err)
	}
}

// blackhole is what moby/ipvs amounts to on a kernel without IPVS: every call succeeds, nothing is listed.
type blackhole struct{ ipvs.Interface }

func (blackhole) AddService(ipvs.Service) error       { return nil }
func (blackhole) DeleteService(ipvs.ServiceKey) error { return nil }
func (blackhole) Services() ([]ipvs.Service, error)   { return nil, nil }

func TestProbe(t *testing.T) {
	boom := errors.New("ENOPROTOOPT")
	tests := []struct {
		name    string
		iface   func() ipvs.Interface
		wantErr error
	}{
		{name: "working IPVS", iface: func() ipvs.Interface { return fake.New() }},
		{name: "leftover probe is fine", iface: func() ipvs.Interface {
			f := fake.New()
			_ = f.AddService(host.ProbeService)
			return f
		}},
		{name: "add refused", iface: func() ipvs.Interface {
			f := fake.New()
			f.SetError(fake.AddService, boom)
			return f
		}, wantErr: ipvs.ErrNotSupported},
		{name: "accepted but not listed", iface: func() ipvs.Interface { return blackhole{} }, wantErr: ipvs.ErrNotSupported},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			i := tt.iface()
			err := host.Probe(i)
			if tt.wantErr == nil && err != nil {
				t.Fatalf("Probe: %v", err)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("Probe err = %v, want %v", err, tt.wantErr)
			}
			if f, ok := i.(*fake.IPVS); ok && err == nil {
				if svcs, _ := f.Services(); len(svcs) != 0 {
					t.Errorf("probe left %v behind", svcs)
				}
			}
		})
	}
}
