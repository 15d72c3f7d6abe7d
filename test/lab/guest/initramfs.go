package guest

import (
	"bufio"
	"context"
	"crypto/sha256"
	"debug/elf"
	_ "embed"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/ipvs-operator/ipvs-operator/test/lab/host"
)

//go:embed init
var guestInit []byte

// cpioEntry is one file of the initramfs: a directory, a symlink, a device, a host file or inline data.
type cpioEntry struct {
	name   string // path inside the archive, without leading slash
	mode   uint32 // including the file type bits
	src    string // host file (regular files)
	data   []byte // inline content (regular files, when src is empty)
	link   string // symlink target
	rmajor uint32
	rminor uint32
}

const (
	sIFDIR = 0o040000
	sIFREG = 0o100000
	sIFLNK = 0o120000
	sIFCHR = 0o020000
)

// initramfsSpec collects the entries of an initramfs.
type initramfsSpec struct {
	entries map[string]*cpioEntry
}

func newInitramfsSpec() *initramfsSpec { return &initramfsSpec{entries: map[string]*cpioEntry{}} }

func (s *initramfsSpec) dir(p string) {
	p = strings.Trim(p, "/")
	if p == "" || p == "." {
		return
	}
	if _, ok := s.entries[p]; ok {
		return
	}
	s.dir(path.Dir(p))
	s.entries[p] = &cpioEntry{name: p, mode: sIFDIR | 0o755}
}

func (s *initramfsSpec) add(e *cpioEntry) {
	e.name = strings.Trim(e.name, "/")
	s.dir(path.Dir(e.name))
	s.entries[e.name] = e
}

func (s *initramfsSpec) file(dst, src string, perm uint32) {
	s.add(&cpioEntry{name: dst, mode: sIFREG | perm, src: src})
}

func (s *initramfsSpec) inline(dst string, data []byte, perm uint32) {
	s.add(&cpioEntry{name: dst, mode: sIFREG | perm, data: data})
}

func (s *initramfsSpec) symlink(dst, target string) {
	s.add(&cpioEntry{name: dst, mode: sIFLNK | 0o777, link: target})
}

// dynamic adds a dynamically linked host program at dst with every shared library ldd names, each at the
// path ldd reports.
func (s *initramfsSpec) dynamic(ctx context.Context, dst, src string) error {
	s.file(dst, src, 0o755)
	out, err := host.Run(ctx, "", "ldd", src)
	if err != nil {
		if isStatic(src) {
			return nil
		}
		return err
	}
	s.libraries(out)
	return nil
}

var lddPathRe = regexp.MustCompile(`(/[^ \t:]+)`)

// libraries adds every shared library ldd's output names, each at the path ldd reports (lines naming a
// program of a multi-file ldd, "path:", are skipped).
func (s *initramfsSpec) libraries(lddOut string) {
	sc := bufio.NewScanner(strings.NewReader(lddOut))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasSuffix(line, ":") {
			continue
		}
		for _, lib := range lddPathRe.FindAllString(line, -1) {
			resolved, err := filepath.EvalSymlinks(lib)
			if err != nil {
				continue
			}
			if _, ok := s.entries[strings.Trim(lib, "/")]; !ok {
				s.file(lib, resolved, 0o755)
			}
		}
	}
}

// manifest is a stable description of the inputs, hashed to decide whether to rebuild.
func (s *initramfsSpec) manifest() (string, error) {
	names := make([]string, 0, len(s.entries))
	for n := range s.entries {
		names = append(names, n)
	}
	sort.Strings(names)
	h := sha256.New()
	for _, n := range names {
		e := s.entries[n]
		fmt.Fprintf(h, "%s %o %s %d %d", n, e.mode, e.link, e.rmajor, e.rminor)
		if e.src != "" {
			st, err := os.Stat(e.src)
			if err != nil {
				return "", err
			}
			fmt.Fprintf(h, " %s %d %d", e.src, st.Size(), st.ModTime().UnixNano())
		} else if e.data != nil {
			d := sha256.Sum256(e.data)
			fmt.Fprintf(h, " %x", d)
		}
		h.Write([]byte{'\n'})
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// writeCpio writes the entries as an uncompressed newc archive (an uncompressed initramfs boots faster
// under TCG than a gzipped one). Timestamps are zero, so equal inputs give equal archives.
func (s *initramfsSpec) writeCpio(w io.Writer) error {
	names := make([]string, 0, len(s.entries))
	for n := range s.entries {
		names = append(names, n)
	}
	sort.Strings(names) // parents sort before their children
	bw := bufio.NewWriterSize(w, 1<<20)
	ino := uint32(1)
	for _, n := range names {
		e := s.entries[n]
		var data []byte
		var r io.Reader
		var size int64
		switch e.mode & 0o170000 {
		case sIFLNK:
			data = []byte(e.link)
			size = int64(len(data))
		case sIFREG:
			if e.src != "" {
				f, err := os.Open(e.src)
				if err != nil {
					return err
				}
				defer f.Close()
				st, err := f.Stat()
				if err != nil {
					return err
				}
				size = st.Size()
				r = f
			} else {
				data = e.data
				size = int64(len(data))
			}
		}
		if err := cpioHeader(bw, ino, e.mode, 1, size, e.rmajor, e.rminor, n); err != nil {
			return err
		}
		ino++
		if r != nil {
			if _, err := io.CopyN(bw, r, size); err != nil {
				return fmt.Errorf("lab: initramfs: %s: %w", e.src, err)
			}
		} else if _, err := bw.Write(data); err != nil {
			return err
		}
		if err := pad4(bw, size); err != nil {
			return err
		}
	}
	if err := cpioHeader(bw, 0, 0, 1, 0, 0, 0, "TRAILER!!!"); err != nil {
		return err
	}
	return bw.Flush()
}

func cpioHeader(w *bufio.Writer, ino, mode, nlink uint32, size int64, rmajor, rminor uint32, name string) error {
	namesize := len(name) + 1
	_, err := fmt.Fprintf(w, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		ino, mode, 0, 0, nlink, 0, uint32(size), 0, 0, rmajor, rminor, namesize, 0)
	if err != nil {
		return err
	}
	if _, err := w.WriteString(name); err != nil {
		return err
	}
	if err := w.WriteByte(0); err != nil {
		return err
	}
	return pad4(w, int64(110+namesize))
}

func pad4(w *bufio.Writer, n int64) error {
	for i := n; i%4 != 0; i++ {
		if err := w.WriteByte(0); err != nil {
			return err
		}
	}
	return nil
}

// hostProgram finds the first existing path.
func hostProgram(paths ...string) string {
	for _, p := range paths {
		if host.Exists(p) {
			return p
		}
	}
	return ""
}

// BuildInitramfs (re)builds the initramfs when its inputs changed. Guest Go binaries are not in it: they
// come over the 9p share, so rebuilding Go code never rebuilds the initramfs.
func BuildInitramfs(ctx context.Context, cache string, k *Kernel, out io.Writer) (string, error) {
	s := newInitramfsSpec()
	for _, d := range []string{"bin", "sbin", "etc/lab", "proc", "sys", "dev", "run", "tmp", "mnt/host", "root",
		"var/log", "usr/bin", "usr/sbin", "lib64", "srv"} {
		s.dir(d)
	}
	s.add(&cpioEntry{name: "dev/console", mode: sIFCHR | 0o600, rmajor: 5, rminor: 1})
	s.symlink("var/run", "../run")

	if err := s.userland(ctx); err != nil {
		return "", err
	}
	s.inline("etc/passwd", []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644)
	s.inline("etc/group", []byte("root:x:0:\n"), 0o644)
	s.inline("etc/hosts", []byte("127.0.0.1 localhost\n10.0.2.100 lab-host\n"), 0o644)

	// kernel modules, with modules.dep (the agent's own loader reads it)
	modRoot := filepath.Join(k.ModulesRoot, "lib", "modules", k.Version)
	err := filepath.WalkDir(modRoot, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			rel, _ := filepath.Rel(k.ModulesRoot, p)
			s.file(rel, p, 0o644)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	s.file("etc/lab/modules.load", k.LoadList, 0o644)
	s.inline("etc/lab/kernel-version", []byte(k.Version+"\n"), 0o644)
	s.inline("init", guestInit, 0o755)

	sum, err := s.manifest()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cache, k.initramfsDir)
	outFile := filepath.Join(dir, "initramfs.cpio")
	sumFile := filepath.Join(dir, "inputs.sha256")
	if old, err := os.ReadFile(sumFile); err == nil && strings.TrimSpace(string(old)) == sum && host.Exists(outFile) {
		return outFile, nil
	}
	t0 := time.Now()
	host.Progress(out, "building the initramfs (%d files)", len(s.entries))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	f, err := os.Create(outFile + ".tmp")
	if err != nil {
		return "", err
	}
	if err := s.writeCpio(f); err != nil {
		f.Close()
		os.Remove(outFile + ".tmp")
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	if err := os.Rename(outFile+".tmp", outFile); err != nil {
		return "", err
	}
	if err := os.WriteFile(sumFile, []byte(sum+"\n"), 0o644); err != nil {
		return "", err
	}
	st, _ := os.Stat(outFile)
	host.Progress(out, "initramfs %s: %d MiB in %s", outFile, st.Size()>>20, time.Since(t0).Round(time.Millisecond))
	return outFile, nil
}

// BusyboxImageDir holds one link to busybox per applet, and nothing else: the lab kubelet maps upstream's
// busybox image there, so its containers run busybox's own sh, whose applets (nc, wget) shadow the programs
// on PATH as in that image, which has nothing but busybox.
const BusyboxImageDir = "/usr/lib/busybox-image"

// userland adds the guest's programs: busybox for the lab's own scripts (init runs busybox sh by name),
// dash as /bin/sh, and the real programs pods and nodes run.
//
// /bin/sh is dash, not busybox, because pods share the VM's root filesystem and upstream's e2e specs run
// their probes through /bin/sh -c in the agnhost image (Alpine): that sh looks commands up on PATH and finds
// netcat-openbsd and curl there. Debian's busybox sh runs its own applets instead, whatever PATH says, and
// its nc has no -v/-t/-u while its wget crashes on -T. GNU wget stands in for Alpine's busybox wget (`wget
// -T 1 -q -O -` means the same to both).
func (s *initramfsSpec) userland(ctx context.Context) error {
	bb := busyboxPath()
	if bb == "" || !isStatic(bb) {
		return fmt.Errorf("lab: a static busybox is needed (package busybox-static)")
	}
	s.file("bin/busybox", bb, 0o755)
	list, err := host.Run(ctx, "", bb, "--list")
	if err != nil {
		return err
	}
	for _, a := range strings.Fields(list) {
		if a == "busybox" {
			continue
		}
		s.symlink("bin/"+a, "busybox")
		s.symlink(path.Join(strings.TrimPrefix(BusyboxImageDir, "/"), a), "/bin/busybox")
	}
	// The kernel's request_module() (e.g. IPVS scheduler autoload) runs /sbin/modprobe.
	s.symlink("sbin/modprobe", "../bin/busybox")

	tools := []struct {
		dst      string
		srcs     []string
		optional bool
	}{
		{"bin/dash", []string{"/usr/bin/dash", "/bin/dash"}, false},
		{"usr/sbin/ip", []string{"/usr/sbin/ip", "/sbin/ip", "/bin/ip"}, false},
		{"usr/sbin/ipvsadm", []string{"/usr/sbin/ipvsadm", "/sbin/ipvsadm"}, false},
		{"usr/sbin/nft", []string{"/usr/sbin/nft", "/sbin/nft"}, false},
		{"usr/sbin/conntrack", []string{"/usr/sbin/conntrack", "/sbin/conntrack"}, true},
		{"usr/bin/curl", []string{"/usr/bin/curl"}, false},
		{"usr/bin/wget", []string{"/usr/bin/wget"}, false},
		// kube-proxy's ipvs mode checks `ipset --version` and keeps its sets with it
		{"usr/sbin/ipset", []string{"/usr/sbin/ipset", "/sbin/ipset"}, false},
		{"usr/bin/nc", []string{"/bin/nc.openbsd", "/usr/bin/nc.openbsd"}, false},
	}
	for _, t := range tools {
		src := hostProgram(t.srcs...)
		if src == "" {
			if t.optional {
				continue
			}
			return fmt.Errorf("lab: host program %s not found", t.dst)
		}
		resolved, err := filepath.EvalSymlinks(src)
		if err != nil {
			return err
		}
		if err := s.dynamic(ctx, t.dst, resolved); err != nil {
			return err
		}
	}
	s.symlink("bin/sh", "dash")
	if err := addXtables(ctx, s); err != nil {
		return err
	}
	s.hostEtc()
	return nil
}

// StaticBusybox reports whether /bin/busybox (or /usr/bin/busybox) is statically linked: the guest has
// no C library besides the ones we copy for ip, nft and ipvsadm.
func StaticBusybox() bool {
	p := busyboxPath()
	if p == "" {
		return false
	}
	return isStatic(p)
}

func busyboxPath() string {
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
		if host.Exists(p) {
			return p
		}
	}
	return ""
}

func isStatic(file string) bool {
	f, err := elf.Open(file)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false
		}
	}
	return true
}

// xtablesLinks are the names Debian's iptables package gives its two multi-call programs; iptables,
// ip6tables and their -save/-restore are the nft flavour, as Debian's alternatives choose by default.
var xtablesLinks = map[string][]string{
	"xtables-nft-multi": {"iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save",
		"ip6tables-restore", "iptables-nft", "iptables-nft-save", "iptables-nft-restore", "ip6tables-nft",
		"ip6tables-nft-save", "ip6tables-nft-restore"},
	"xtables-legacy-multi": {"iptables-legacy", "iptables-legacy-save", "iptables-legacy-restore",
		"ip6tables-legacy", "ip6tables-legacy-save", "ip6tables-legacy-restore"},
}

// xtablesExtensionDirs hold the match and target extensions (libxt_*.so) iptables dlopens: ldd does not
// name them.
var xtablesExtensionDirs = []string{"/usr/lib/x86_64-linux-gnu/xtables", "/usr/lib/xtables"}

// addXtables adds Debian's iptables programs (package iptables) under the names kube-proxy runs, and their
// extensions with the libraries those link.
func addXtables(ctx context.Context, s *initramfsSpec) error {
	for prog, links := range xtablesLinks {
		src := hostProgram("/usr/sbin/"+prog, "/sbin/"+prog)
		if src == "" {
			return fmt.Errorf("lab: host program %s not found (package iptables)", prog)
		}
		if err := s.dynamic(ctx, "usr/sbin/"+prog, src); err != nil {
			return err
		}
		for _, l := range links {
			s.symlink("usr/sbin/"+l, prog)
		}
	}
	for _, dir := range xtablesExtensionDirs {
		exts, _ := filepath.Glob(filepath.Join(dir, "*.so"))
		if len(exts) == 0 {
			continue
		}
		for _, e := range exts {
			s.file(strings.TrimPrefix(e, "/"), e, 0o644)
		}
		// One ldd for the ~150 extensions: the spec is computed at every lab start.
		out, err := host.Run(ctx, "", "ldd", exts...)
		if err != nil {
			return fmt.Errorf("lab: ldd %s/*.so: %w", dir, err)
		}
		s.libraries(out)
	}
	return nil
}

// hostEtc adds the host's protocol, service and ethertype names and iproute2's tables, which the programs
// above read.
func (s *initramfsSpec) hostEtc() {
	for _, f := range []string{"/etc/protocols", "/etc/services", "/etc/ethertypes"} {
		if host.Exists(f) {
			s.file(strings.TrimPrefix(f, "/"), f, 0o644)
		}
	}
	if host.Exists("/etc/iproute2") {
		_ = filepath.WalkDir("/etc/iproute2", func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				s.file(strings.TrimPrefix(p, "/"), p, 0o644)
			}
			return nil
		})
	}
}
