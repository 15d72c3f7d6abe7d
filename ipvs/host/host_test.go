package host_test

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
	"golang.org/x/sys/unix"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
	"github.com/ipvs-operator/ipvs-operator/ipvs/fake"
	"github.com/ipvs-operator/ipvs-operator/ipvs/host"
)

// modulesTree writes a module tree shaped like Debian's (depmod output), with a file for every module
// modules.dep lists (compressed as its name says), and returns a Loader on it whose system calls are a
// fake kernel that records load order instead of loading.
func modulesTree(t *testing.T, files map[string]string, loaded ...string) (*host.Loader, *[]string) {
	t.Helper()
	l, k := modulesTreeKernel(t, files, loaded...)
	return l, &k.order
}

// fakeKernel is finit_module and init_module as a kernel answers them. A module file holds "\x7fELF"
// and its name, compressed as its extension says; the fake reads the name back from what it was handed,
// so a module decompressed wrongly does not load.
type fakeKernel struct {
	sys string
	// decompresses are the formats finit_module with MODULE_INIT_COMPRESSED_FILE takes (".xz", ...);
	// refuseFlag is its answer for the others (EINVAL before 5.17, EOPNOTSUPP without
	// CONFIG_MODULE_DECOMPRESS).
	decompresses map[string]bool
	refuseFlag   error
	order        []string
	how          []string // "name finit", "name finit-compressed", "name init"
}

func (k *fakeKernel) FinitModule(f *os.File, params string, flags int) error {
	data, err := io.ReadAll(f)
	if err != nil {
		return err
	}
	ext := filepath.Ext(f.Name())
	if flags&unix.MODULE_INIT_COMPRESSED_FILE != 0 {
		if !k.decompresses[ext] {
			return k.refuseFlag
		}
		if data, err = unpack(ext, data); err != nil {
			return unix.EINVAL
		}
		return k.load(data, params, "finit-compressed")
	}
	return k.load(data, params, "finit")
}

func (k *fakeKernel) InitModule(image []byte, params string) error {
	return k.load(image, params, "init")
}

func (k *fakeKernel) load(image []byte, params, how string) error {
	name, ok := strings.CutPrefix(string(image), "\x7fELF")
	if !ok {
		return unix.ENOEXEC // what the kernel says of a compressed file handed over as is
	}
	if strings.Contains(name, "fails") {
		return unix.ENODEV
	}
	if name == "already" {
		return unix.EEXIST
	}
	k.how = append(k.how, name+" "+how)
	if params != "" {
		name += " " + params
	}
	k.order = append(k.order, name)
	// What the kernel does: the module now shows in /sys/module.
	return os.MkdirAll(filepath.Join(k.sys, strings.Fields(strings.ReplaceAll(name, "-", "_"))[0]), 0o755)
}

// pack compresses a module file's content as its extension says.
func pack(t *testing.T, ext string, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	var w io.WriteCloser
	var err error
	switch ext {
	case ".xz":
		w, err = xz.NewWriter(&b)
	case ".zst":
		w, err = zstd.NewWriter(&b)
	case ".gz":
		w = gzip.NewWriter(&b)
	default:
		return data
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func unpack(ext string, data []byte) ([]byte, error) {
	var r io.Reader
	var err error
	switch ext {
	case ".xz":
		r, err = xz.NewReader(bytes.NewReader(data))
	case ".zst":
		var z *zstd.Decoder
		z, err = zstd.NewReader(bytes.NewReader(data))
		if err == nil {
			defer z.Close()
		}
		r = z
	case ".gz":
		r, err = gzip.NewReader(bytes.NewReader(data))
	}
	if err != nil {
		return nil, err
	}
	return io.ReadAll(r)
}

// modulesTreeKernel is modulesTree with the fake kernel exposed; by default it decompresses every format.
func modulesTreeKernel(t *testing.T, files map[string]string, loaded ...string) (*host.Loader, *fakeKernel) {
	t.Helper()
	root := t.TempDir()
	mods := filepath.Join(root, "lib", "modules", "6.12.0-99-amd64")
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
	for _, line := range strings.Split(files["modules.dep"], "\n") {
		file, _, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		name := filepath.Base(file)
		name = name[:strings.Index(name, ".ko")]
		data := []byte("\x7fELF" + name)
		if strings.Contains(name, "corrupt") {
			data = []byte("not a module")
		}
		p := filepath.Join(mods, file)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, pack(t, filepath.Ext(file), data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range loaded {
		if err := os.Mkdir(filepath.Join(sys, m), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	k := &fakeKernel{sys: sys, decompresses: map[string]bool{".xz": true, ".zst": true, ".gz": true}, refuseFlag: unix.EINVAL}
	return &host.Loader{ModulesDir: mods, SysModuleDir: sys, Syscalls: k}, k
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
			name:   "a compressed module among uncompressed ones",
			files:  map[string]string{"modules.dep": debianDep},
			loaded: base,
			load:   []string{"ip_vs_mh"},
			want:   []string{"ip_vs_mh"},
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
	if err == nil || !strings.Contains(err.Error(), "built without it (CONFIG_NFT_FIB_INET is not set") {
		t.Errorf("err = %v, want it to say the kernel lacks nft_fib_inet, naming its option", err)
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

// TestLoadCompressed loads IPVS from trees whose modules are compressed as distributions ship them, on
// kernels that decompress them, kernels that cannot (older than 5.17, or without
// CONFIG_MODULE_DECOMPRESS, or built for another format), and kernels with IPVS built in or missing.
func TestLoadCompressed(t *testing.T) {
	dep := func(ext string) string {
		return strings.NewReplacer(".ko", ".ko"+ext).Replace(`kernel/net/netfilter/ipvs/ip_vs.ko: kernel/net/netfilter/nf_conntrack.ko kernel/lib/libcrc32c.ko
kernel/net/netfilter/ipvs/ip_vs_rr.ko: kernel/net/netfilter/ipvs/ip_vs.ko kernel/net/netfilter/nf_conntrack.ko kernel/lib/libcrc32c.ko
kernel/net/netfilter/nf_conntrack.ko: kernel/lib/libcrc32c.ko
kernel/lib/libcrc32c.ko:
kernel/crypto/crc32c_generic.ko:
kernel/net/netfilter/ipvs/ip_vs_corrupt.ko: kernel/net/netfilter/ipvs/ip_vs.ko
`)
	}
	order := []string{"crc32c_generic", "libcrc32c", "nf_conntrack", "ip_vs", "ip_vs_rr"}
	each := func(how string) []string {
		out := make([]string, len(order))
		for i, m := range order {
			out[i] = m + " " + how
		}
		return out
	}
	tests := []struct {
		name         string
		ext          string
		decompresses []string // formats the kernel's finit_module decompresses
		refuseFlag   error
		builtin      string
		load         []string
		want         []string // "module how", in load order
		failed       []string
		failedIs     error
		errSays      string
	}{
		{name: ".ko.xz, kernel decompresses (Debian 6.12)", ext: ".xz", decompresses: []string{".xz"}, load: []string{"ip_vs_rr"}, want: each("finit-compressed")},
		{name: ".ko.zst, kernel decompresses (Ubuntu 24.04, Fedora, Arch)", ext: ".zst", decompresses: []string{".zst"}, load: []string{"ip_vs_rr"}, want: each("finit-compressed")},
		{name: ".ko.gz, kernel decompresses", ext: ".gz", decompresses: []string{".gz"}, load: []string{"ip_vs_rr"}, want: each("finit-compressed")},
		{name: ".ko.xz, kernel before 5.17: EINVAL, decompressed here", ext: ".xz", refuseFlag: unix.EINVAL, load: []string{"ip_vs_rr"}, want: each("init")},
		{name: ".ko.zst, no CONFIG_MODULE_DECOMPRESS: EOPNOTSUPP, decompressed here", ext: ".zst", refuseFlag: unix.EOPNOTSUPP, load: []string{"ip_vs_rr"}, want: each("init")},
		{name: ".ko.gz, no finit_module: ENOSYS, decompressed here", ext: ".gz", refuseFlag: unix.ENOSYS, load: []string{"ip_vs_rr"}, want: each("init")},
		{name: ".ko.zst on a kernel that decompresses only xz", ext: ".zst", decompresses: []string{".xz"}, refuseFlag: unix.EINVAL, load: []string{"ip_vs_rr"}, want: each("init")},
		{name: "uncompressed .ko: plain finit_module", ext: "", load: []string{"ip_vs_rr"}, want: each("finit")},
		{
			name: "IPVS built in: nothing to load", ext: ".xz", decompresses: []string{".xz"},
			builtin: "kernel/net/netfilter/ipvs/ip_vs.ko\nkernel/net/netfilter/ipvs/ip_vs_rr.ko\nkernel/net/netfilter/nf_conntrack.ko\nkernel/lib/libcrc32c.ko\nkernel/crypto/crc32c_generic.ko\n",
			load:    []string{"ip_vs", "ip_vs_rr"},
		},
		{
			name: "a kernel without IPVS: said so, with the option", ext: ".xz", decompresses: []string{".xz"},
			load: []string{"ip_vs_wlc", "nf_conntrack"}, want: []string{"crc32c_generic finit-compressed", "libcrc32c finit-compressed", "nf_conntrack finit-compressed"},
			failed: []string{"ip_vs_wlc"}, failedIs: fs.ErrNotExist, errSays: "built without it (CONFIG_IP_VS_WLC is not set",
		},
		{
			name: "a corrupt .ko.xz: named, nothing else is hurt", ext: ".xz", refuseFlag: unix.EOPNOTSUPP,
			load: []string{"ip_vs_corrupt", "ip_vs_rr"}, want: each("init"),
			failed: []string{"ip_vs_corrupt"}, errSays: "decompressing ip_vs_corrupt.ko.xz",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, k := modulesTreeKernel(t, map[string]string{"modules.dep": dep(tt.ext), "modules.builtin": tt.builtin})
			k.decompresses = map[string]bool{}
			for _, f := range tt.decompresses {
				k.decompresses[f] = true
			}
			k.refuseFlag = tt.refuseFlag
			var logged []string
			l.OnInsert = func(name, file, _ string) { logged = append(logged, name+" "+file) }
			err := l.Load(tt.load...)
			if !reflect.DeepEqual(k.how, tt.want) && (len(k.how) > 0 || len(tt.want) > 0) {
				t.Errorf("loaded = %v, want %v", k.how, tt.want)
			}
			if len(logged) != len(tt.want) || (len(logged) > 0 && !strings.HasSuffix(logged[0], ".ko"+tt.ext)) {
				t.Errorf("OnInsert saw %v", logged)
			}
			if tt.failed == nil {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				return
			}
			var me *host.ModuleError
			if !errors.As(err, &me) || !reflect.DeepEqual(me.Modules(), tt.failed) {
				t.Fatalf("Load err = %v, want %v failed", err, tt.failed)
			}
			if tt.failedIs != nil && !errors.Is(err, tt.failedIs) {
				t.Errorf("err = %v, want it to wrap %v", err, tt.failedIs)
			}
			if !strings.Contains(err.Error(), tt.errSays) {
				t.Errorf("err = %v, want it to say %q", err, tt.errSays)
			}
		})
	}
}
