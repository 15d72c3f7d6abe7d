// Package host prepares a node's kernel for an IPVS proxy: the modules it needs, the sysctls its data
// path depends on, and a probe proving that IPVS really answers.
package host

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// Schedulers are the IPVS scheduler modules; a missing one only disables that scheduler.
var Schedulers = []string{"ip_vs_rr", "ip_vs_wrr", "ip_vs_lc", "ip_vs_wlc", "ip_vs_sh", "ip_vs_dh", "ip_vs_mh", "ip_vs_sed", "ip_vs_nq"}

// RequiredModules are the modules the agent loads at start: IPVS and its schedulers, conntrack, the dummy
// device and what the nftables rules use. All exist as loadable modules in Debian's 6.1 kernels
// (uncompressed .ko files) and 6.12 kernels (.ko.xz, CONFIG_MODULE_DECOMPRESS=y), both proven in the lab;
// dependencies such as nf_nat, nf_reject_ipv4, libcrc32c come from modules.dep.
var RequiredModules = append([]string{"ip_vs"}, append(slices.Clone(Schedulers),
	"nf_conntrack", "dummy", "nf_tables", "nft_ct", "nft_masq", "nft_nat", "nft_chain_nat", "nft_reject_inet", "nft_fib_inet")...)

// ErrNoModuleTree means /lib/modules/$(uname -r)/modules.dep is unreadable. Then a module counts as present
// only if /sys/module shows it, and built-in modules without parameters do not show there (nf_tables, for
// one), so a caller seeing this error should rely on Probe and on programming nftables instead.
var ErrNoModuleTree = errors.New("no kernel module tree")

// ModuleError lists the modules that could not be loaded, each with its cause. Loading goes on past a
// failure, so every module that could be loaded is.
type ModuleError struct {
	Failed map[string]error
	// noTree is set when every failure is the same unreadable module tree: said once, not per module.
	noTree error
	// checked is set for Check's result: nothing was loaded, the modules are only absent.
	checked bool
}

// Error implements error.
func (e *ModuleError) Error() string {
	if e.noTree != nil {
		return "host: kernel modules " + strings.Join(e.Modules(), ", ") + " are not loaded, and " + e.noTree.Error()
	}
	var parts []string
	for _, name := range e.Modules() {
		parts = append(parts, e.Failed[name].Error())
	}
	if e.checked {
		return "host: kernel modules neither loaded nor built in: " + strings.Join(parts, "; ")
	}
	return "host: cannot load kernel modules: " + strings.Join(parts, "; ")
}

// Unwrap returns the causes, for errors.Is.
func (e *ModuleError) Unwrap() []error {
	names := e.Modules()
	out := make([]error, 0, len(names))
	for _, name := range names {
		out = append(out, e.Failed[name])
	}
	return out
}

// Modules returns the names of the modules that failed, sorted.
func (e *ModuleError) Modules() []string {
	names := make([]string, 0, len(e.Failed))
	for n := range e.Failed {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Loader loads kernel modules without a modprobe binary (the agent's image is distroless): it resolves
// dependencies from modules.dep and pre-soft-dependencies from modules.softdep, skips built-in and
// already loaded modules, and calls finit_module; compressed modules (.ko.xz, .ko.zst, .ko.gz, what
// Ubuntu, Fedora, Arch and Debian since 6.x ship) are decompressed by the kernel where it can, by the
// Loader otherwise. The zero value loads from the running kernel's tree.
type Loader struct {
	// ModulesDir holds modules.dep and the .ko files; "" means /lib/modules/$(uname -r).
	ModulesDir string
	// SysModuleDir lists loaded modules; "" means /sys/module.
	SysModuleDir string
	// Syscalls loads module files; nil means finit_module(2) and init_module(2). Tests inject a fake.
	Syscalls ModuleSyscalls
	// OnInsert, when set, is told of each module inserted: its name, its file (relative to ModulesDir)
	// and how it went in ("finit_module, decompressed by the kernel", ...).
	OnInsert func(name, file, how string)
	// Params are module parameters by module name; nil means DefaultParams.
	Params map[string]string

	// noKernelDecompress is set once the kernel refused MODULE_INIT_COMPRESSED_FILE.
	noKernelDecompress bool
}

// DefaultParams are the module parameters used when Params is nil: without numdummies=0, loading dummy also creates an unused dummy0.
var DefaultParams = map[string]string{"dummy": "numdummies=0"}

// LoadModules loads modules and their dependencies from the running kernel's module tree.
// Equivalent to: `modprobe -a NAME...`.
func LoadModules(names ...string) error { return (&Loader{}).Load(names...) }

// LoadRequiredModules loads RequiredModules. Schedulers that fail are returned as missing, a warning
// (Services using them fail, the rest works); any other failure is the error.
func LoadRequiredModules() (missingSchedulers []string, err error) {
	return (&Loader{}).LoadRequired()
}

// LoadRequired is LoadRequiredModules with this Loader.
func (l *Loader) LoadRequired() (missingSchedulers []string, err error) {
	return splitSchedulers(l.Load(RequiredModules...))
}

// ErrNotLoaded is the cause of a module that a check found neither loaded nor built in.
var ErrNotLoaded = errors.New("not loaded")

// CheckRequired is LoadRequired without loading anything: what a process without CAP_SYS_MODULE can know.
// A module counts as present when /sys/module shows it or modules.builtin lists it. Schedulers that are
// absent are returned as missing (a warning); any other absent module is in the error, a *ModuleError
// whose causes wrap ErrNotLoaded, or ErrNoModuleTree when modules.builtin could not be read (a built-in
// module without parameters cannot be told from a missing one then).
func (l *Loader) CheckRequired() (missingSchedulers []string, err error) {
	return splitSchedulers(l.Check(RequiredModules...))
}

// Check reports the modules among names that are neither loaded nor built in. Equivalent to:
// `grep -qw NAME /proc/modules || grep -q /NAME.ko /lib/modules/$(uname -r)/modules.builtin`.
func (l *Loader) Check(names ...string) error {
	tree, treeErr := l.readTree()
	if treeErr != nil {
		treeErr = fmt.Errorf("%w to tell built-in modules from missing ones: %w", ErrNoModuleTree, treeErr)
	}
	failed := map[string]error{}
	for _, name := range names {
		name = normalize(name)
		switch {
		case l.loaded(name):
		case treeErr != nil:
			failed[name] = fmt.Errorf("module %s: %w", name, treeErr)
		case tree.builtin[name]:
		case tree.paths[name] == "" && len(tree.aliases[name]) == 0:
			failed[name] = fmt.Errorf("module %s: %w, and %w", name, ErrNotLoaded, notBuilt(name, tree.dir))
		default:
			failed[name] = fmt.Errorf("module %s: %w", name, ErrNotLoaded)
		}
	}
	if len(failed) == 0 {
		return nil
	}
	if treeErr != nil {
		return &ModuleError{Failed: failed, noTree: treeErr, checked: true}
	}
	return &ModuleError{Failed: failed, checked: true}
}

// splitSchedulers separates missing schedulers (a warning) from the other failures in a *ModuleError.
func splitSchedulers(err error) (missingSchedulers []string, _ error) {
	var me *ModuleError
	if !errors.As(err, &me) {
		return nil, err
	}
	fatal := &ModuleError{Failed: map[string]error{}, noTree: me.noTree, checked: me.checked}
	for name, cause := range me.Failed {
		if slices.Contains(Schedulers, name) {
			missingSchedulers = append(missingSchedulers, name)
		} else {
			fatal.Failed[name] = cause
		}
	}
	slices.Sort(missingSchedulers)
	if len(fatal.Failed) > 0 {
		return missingSchedulers, fatal
	}
	return missingSchedulers, nil
}

// Load loads each module with its dependencies, in order. Equivalent to: `modprobe -a NAME...`.
func (l *Loader) Load(names ...string) error {
	failed := map[string]error{}
	tree, treeErr := l.readTree()
	if treeErr != nil {
		treeErr = fmt.Errorf("%w to load them from (mount the host's /lib/modules read-only into the agent, or load them on the host; built-in modules without parameters cannot be seen): %w", ErrNoModuleTree, treeErr)
	}
	for _, name := range names {
		name = normalize(name)
		if l.loaded(name) {
			continue
		}
		var err error
		if treeErr != nil {
			err = fmt.Errorf("module %s: %w", name, treeErr)
		} else {
			err = l.loadWithDeps(tree, name, map[string]bool{})
		}
		if err != nil {
			failed[name] = err
		}
	}
	if len(failed) == 0 {
		return nil
	}
	if treeErr != nil {
		return &ModuleError{Failed: failed, noTree: treeErr}
	}
	return &ModuleError{Failed: failed}
}

// moduleTree is what modprobe reads from /lib/modules/$(uname -r).
type moduleTree struct {
	dir     string
	paths   map[string]string   // module -> file, relative to dir
	deps    map[string][]string // module -> dependencies, as listed (the last one loads first)
	builtin map[string]bool
	softPre map[string][]string // module -> names to try loading first
	aliases map[string][]string // alias -> modules
}

func (l *Loader) readTree() (*moduleTree, error) {
	dir := l.ModulesDir
	if dir == "" {
		var u unix.Utsname
		if err := unix.Uname(&u); err != nil {
			return nil, err
		}
		dir = filepath.Join("/lib/modules", unix.ByteSliceToString(u.Release[:]))
	}
	t := &moduleTree{dir: dir, paths: map[string]string{}, deps: map[string][]string{}, builtin: map[string]bool{},
		softPre: map[string][]string{}, aliases: map[string][]string{}}
	err := eachLine(filepath.Join(dir, "modules.dep"), func(line string) {
		file, rest, ok := strings.Cut(line, ":")
		if !ok {
			return
		}
		name := moduleName(file)
		t.paths[name] = file
		for _, d := range strings.Fields(rest) {
			t.deps[name] = append(t.deps[name], moduleName(d))
		}
	})
	if err != nil {
		return nil, err // without modules.dep nothing can be resolved
	}
	// The other files are optional: an absent one only means there is nothing of its kind.
	_ = eachLine(filepath.Join(dir, "modules.builtin"), func(line string) { t.builtin[moduleName(line)] = true })
	_ = eachLine(filepath.Join(dir, "modules.softdep"), func(line string) {
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != "softdep" {
			return
		}
		pre := false
		for _, w := range f[2:] {
			switch w {
			case "pre:":
				pre = true
			case "post:":
				pre = false
			default:
				if pre {
					t.softPre[normalize(f[1])] = append(t.softPre[normalize(f[1])], w)
				}
			}
		}
	})
	_ = eachLine(filepath.Join(dir, "modules.alias"), func(line string) {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "alias" {
			t.aliases[f[1]] = append(t.aliases[f[1]], normalize(f[2]))
		}
	})
	if len(t.softPre) == 0 {
		// Older depmod writes no modules.softdep; libcrc32c's soft dependency is the one that matters
		// here (nf_conntrack and ip_vs need it, and it fails with "Unknown symbol" without crc32c).
		t.softPre["libcrc32c"] = []string{"crc32c_generic"}
	}
	return t, nil
}

// loadWithDeps loads a module after its soft pre-dependencies and dependencies; seen breaks cycles.
func (l *Loader) loadWithDeps(t *moduleTree, name string, seen map[string]bool) error {
	if seen[name] || t.builtin[name] || l.loaded(name) {
		return nil
	}
	seen[name] = true
	file, ok := t.paths[name]
	if !ok {
		if targets := t.aliases[name]; len(targets) > 0 {
			return l.loadAlias(t, name, targets, seen)
		}
		return fmt.Errorf("module %s: %w", name, notBuilt(name, t.dir))
	}
	// Soft dependencies are best effort, as in modprobe: a candidate that does not load (crc32c_intel on
	// a CPU without SSE4.2) is skipped.
	for _, pre := range t.softPre[name] {
		_ = l.loadWithDeps(t, normalize(pre), seen)
	}
	deps := t.deps[name]
	for i := len(deps) - 1; i >= 0; i-- { // modules.dep lists the deepest dependency last
		if err := l.loadWithDeps(t, deps[i], seen); err != nil {
			return fmt.Errorf("module %s: dependency: %w", name, err)
		}
	}
	return l.insert(name, t.dir, file)
}

// loadAlias loads every module an alias names (crc32c is crc32c_generic and crc32c_intel); one is enough.
func (l *Loader) loadAlias(t *moduleTree, alias string, targets []string, seen map[string]bool) error {
	var errs []error
	for _, m := range targets {
		if err := l.loadWithDeps(t, m, seen); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == len(targets) {
		return fmt.Errorf("alias %s: %w", alias, errors.Join(errs...))
	}
	return nil
}

func (l *Loader) insert(name, dir, file string) error {
	params := l.Params
	if params == nil {
		params = DefaultParams
	}
	path := filepath.Join(dir, file)
	how, err := l.insertFile(path, params[name])
	if errors.Is(err, unix.EEXIST) { // loaded meanwhile (or by the kernel's own autoload)
		return nil
	}
	if err != nil {
		return fmt.Errorf("module %s: load %s: %w", name, path, err)
	}
	if l.OnInsert != nil {
		l.OnInsert(name, file, how)
	}
	return nil
}

// loaded reports whether /sys/module has the module (loaded, or built in with parameters).
func (l *Loader) loaded(name string) bool {
	dir := l.SysModuleDir
	if dir == "" {
		dir = "/sys/module"
	}
	_, err := os.Stat(filepath.Join(dir, name))
	return err == nil
}

// moduleName turns "kernel/net/netfilter/ipvs/ip_vs-rr.ko.xz" into "ip_vs_rr".
func moduleName(path string) string {
	base := filepath.Base(strings.TrimSpace(path))
	if i := strings.Index(base, ".ko"); i >= 0 {
		base = base[:i]
	}
	return normalize(base)
}

// normalize spells a module name as /sys/module does: dashes and underscores are the same to modprobe.
func normalize(name string) string { return strings.ReplaceAll(name, "-", "_") }

func eachLine(path string, fn func(string)) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 64*1024), 1024*1024)
	for s.Scan() {
		if line := strings.TrimSpace(s.Text()); line != "" && !strings.HasPrefix(line, "#") {
			fn(line)
		}
	}
	return s.Err()
}

// kconfig names the kernel option that builds each required module, for the message of a kernel that
// lacks one (schedulers follow the CONFIG_IP_VS_<NAME> pattern).
var kconfig = map[string]string{
	"ip_vs": "CONFIG_IP_VS", "nf_conntrack": "CONFIG_NF_CONNTRACK", "dummy": "CONFIG_DUMMY",
	"nf_tables": "CONFIG_NF_TABLES", "nft_ct": "CONFIG_NFT_CT", "nft_masq": "CONFIG_NFT_MASQ",
	"nft_nat": "CONFIG_NFT_NAT", "nft_chain_nat": "CONFIG_NFT_NAT", "nft_reject_inet": "CONFIG_NFT_REJECT_INET",
	"nft_fib_inet": "CONFIG_NFT_FIB_INET", "libcrc32c": "CONFIG_LIBCRC32C",
}

// notBuilt is the cause for a module that is neither in modules.dep nor in modules.builtin: the kernel
// was built without it, and no loading can help. It wraps fs.ErrNotExist.
func notBuilt(name, dir string) error {
	opt := kconfig[name]
	if opt == "" && strings.HasPrefix(name, "ip_vs_") {
		opt = "CONFIG_IP_VS_" + strings.ToUpper(strings.TrimPrefix(name, "ip_vs_"))
	}
	if opt == "" {
		return fmt.Errorf("neither in %s/modules.dep nor in modules.builtin: this kernel was built without it: %w", dir, fs.ErrNotExist)
	}
	return fmt.Errorf("neither in %s/modules.dep nor in modules.builtin: this kernel was built without it (%s is not set; it needs =m or =y): %w",
		dir, opt, fs.ErrNotExist)
}
