// Package guest prepares what the lab VM boots: Debian's kernel, trimmed to the modules the lab loads
// (kernel.go; LAB_KERNEL picks 6.1 or 6.12, kernels.go), and the initramfs (initramfs.go) holding busybox, the
// host's ip, nft, ipvsadm and conntrack with their libraries, and init, PID 1, which builds the network
// of package topology and starts labd and the kubelets.
package guest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/ipvs-operator/ipvs-operator/test/lab/host"
)

// guestModules are the kernel modules the guest loads at boot (with their dependencies, resolved from the
// kernel's own modules.dep at prepare time).
var guestModules = []string{
	// virtio transport, the NIC and the 9p share
	"virtio_pci", "failover", "net_failover", "virtio_net", "9pnet_virtio", "9p",
	// IPVS and every scheduler
	"ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_lc", "ip_vs_wlc", "ip_vs_sh", "ip_vs_dh", "ip_vs_mh",
	"ip_vs_sed", "ip_vs_nq",
	// conntrack, NAT and nftables
	"nf_conntrack", "nf_conntrack_netlink", "nf_nat", "nf_tables", "nft_chain_nat", "nft_masq", "nft_ct",
	"nft_nat", "nft_reject_inet", "nft_reject_ipv4", "nft_reject_ipv6", "nft_fib_inet", "nft_fib_ipv4",
	"nft_fib_ipv6", "nft_limit", "nft_log", "nft_numgen",
	// x_tables, for kube-proxy's iptables and ipvs modes (the lab runs them next to the agent): the legacy
	// tables, nft_compat (what iptables-nft translates matches and targets to), and the matches and
	// targets those modes write (pkg/proxy/iptables and pkg/proxy/ipvs of kube-proxy v1.37.1)
	"x_tables", "ip_tables", "iptable_nat", "iptable_filter", "iptable_mangle", "ip6_tables",
	"ip6table_nat", "ip6table_filter", "ip6table_mangle", "nft_compat",
	"xt_comment", "xt_conntrack", "xt_addrtype", "xt_mark", "xt_MASQUERADE", "xt_nat", "xt_tcpudp",
	"xt_statistic", "xt_recent", "xt_multiport", "xt_physdev", "xt_ipvs", "xt_nfacct", "xt_set",
	"ipt_REJECT", "ip6t_REJECT",
	// ipsets: kube-proxy's ipvs mode uses hash:ip, hash:ip,port, hash:ip,port,ip, hash:ip,port,net,
	// hash:net and bitmap:port
	"ip_set", "ip_set_hash_ip", "ip_set_hash_ipport", "ip_set_hash_ipportip", "ip_set_hash_ipportnet",
	"ip_set_hash_net", "ip_set_bitmap_port",
	// node and pod networking
	"bridge", "br_netfilter", "veth", "dummy",
	// SCTP sockets for the echo server and client (IPVS and conntrack have SCTP built in)
	"sctp",
	// NETLINK_XFRM: vishvananda/netlink's NewHandle opens a socket of every family it knows, and the
	// kernel would autoload this module on a real node
	"xfrm_user",
}

// moduleOptions are passed to insmod for a module.
var moduleOptions = map[string]string{
	"dummy": "numdummies=0", // no automatic dummy0
}

// Kernel is a prepared Debian kernel.
type Kernel struct {
	// Dir holds vmlinux, the module tree lib/modules/<Version> and modules.load.
	Dir string
	// Version is the kernel release, e.g. 6.1.0-56-amd64.
	Version string
	// Vmlinux is the uncompressed kernel (an ELF with a PVH entry note).
	Vmlinux string
	// ModulesRoot contains lib/modules/<Version> with the modules the guest needs and their modules.dep.
	ModulesRoot string
	// LoadList is the file listing, in load order, "relative/path.ko [options]" lines.
	LoadList string
	// Choice is the lab's name of this kernel ("6.1", "6.12"; LAB_KERNEL).
	Choice string

	// initramfsDir is the cache subdirectory of the initramfs made with this kernel.
	initramfsDir string
}

var kernelPkgRe = regexp.MustCompile(`Depends:\s+(linux-image-[0-9][^\s]*)`)

// kernelInputs identifies what a prepared kernel directory was made from besides the .deb: a change of
// the module list or of how modules are prepared makes Prepare redo it (from the kept .deb, without apt).
func kernelInputs() string {
	h := sha256.New()
	fmt.Fprintf(h, "v2 strip-signatures skip-arch-crypto\n%s\n", strings.Join(guestModules, " "))
	keys := make([]string, 0, len(moduleOptions))
	for k := range moduleOptions {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(h, "%s=%s\n", k, moduleOptions[k])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// PrepareKernel returns the cached kernel name ("" or Kernel61: Debian 12's, Kernel612: Debian 13's; see
// EnvKernel), or unpacks and trims Debian's current one (downloading its .deb once; the .deb stays in the
// cache).
func PrepareKernel(ctx context.Context, cache, name string, out io.Writer) (*Kernel, error) {
	choice, err := chooseKernel(name)
	if err != nil {
		return nil, err
	}
	k, err := prepareKernelTree(ctx, cache, choice, out)
	if err != nil {
		return nil, err
	}
	k.Choice, k.initramfsDir = choice.name, choice.initramfsDir
	return k, nil
}

func prepareKernelTree(ctx context.Context, cache string, choice kernelChoice, out io.Writer) (*Kernel, error) {
	root := filepath.Join(cache, choice.dir)
	// A prepared kernel wins: the warm path must not need apt.
	if k, err := findPreparedKernel(root, choice.inputs()); err == nil && k != nil {
		return k, nil
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, err
	}
	t0 := time.Now()
	debs, _ := filepath.Glob(filepath.Join(root, "linux-image-*.deb"))
	sort.Strings(debs)
	var deb string
	if len(debs) > 0 {
		deb = debs[len(debs)-1]
		host.Progress(out, "preparing the guest kernel from %s", filepath.Base(deb))
	} else {
		host.Progress(out, "preparing the guest kernel %s (Debian; first run only)", choice.name)
		pkg, err := choice.pkg(ctx, out)
		if err != nil {
			return nil, err
		}
		dl, err := os.MkdirTemp(root, ".download-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dl)
		host.Progress(out, "apt-get download %s", pkg)
		if _, err := host.Run(ctx, dl, "apt-get", "download", pkg); err != nil {
			return nil, err
		}
		got, _ := filepath.Glob(filepath.Join(dl, pkg+"_*.deb"))
		if len(got) != 1 {
			return nil, fmt.Errorf("lab: apt-get download %s left %d .deb files", pkg, len(got))
		}
		deb = filepath.Join(root, filepath.Base(got[0]))
		if err := os.Rename(got[0], deb); err != nil {
			return nil, err
		}
	}
	work, err := os.MkdirTemp(root, ".work-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	kroot := filepath.Join(work, "root")
	if _, err := host.Run(ctx, work, "dpkg-deb", "-x", deb, kroot); err != nil {
		return nil, err
	}
	kvers, _ := os.ReadDir(filepath.Join(kroot, "lib", "modules"))
	if len(kvers) != 1 {
		return nil, fmt.Errorf("lab: %s: expected one module tree, found %d", deb, len(kvers))
	}
	kver := kvers[0].Name()
	// The .deb ships no modules.dep: its postinst generates it.
	if _, err := host.Run(ctx, "", depmodPath(), "-b", kroot, kver); err != nil {
		return nil, err
	}
	order, err := moduleClosure(ctx, kroot, kver, choice.bootModules())
	if err != nil {
		return nil, err
	}
	// Modules left to the agent: copied as Debian ships them (compressed), not in the boot list.
	var agentOrder []string
	if len(choice.agentLoads) > 0 {
		all, err := moduleClosure(ctx, kroot, kver, choice.agentLoads)
		if err != nil {
			return nil, err
		}
		agentOrder = slices.DeleteFunc(all, func(rel string) bool { return slices.Contains(order, rel) })
	}
	dst := filepath.Join(work, "out")
	modDst := filepath.Join(dst, "lib", "modules", kver)
	modSrc := filepath.Join(kroot, "lib", "modules", kver)
	if err := os.MkdirAll(modDst, 0o755); err != nil {
		return nil, err
	}
	for _, f := range []string{"modules.builtin", "modules.builtin.modinfo", "modules.order"} {
		if err := host.CopyFile(filepath.Join(modSrc, f), filepath.Join(modDst, f), 0o644); err != nil {
			return nil, err
		}
	}
	load, err := copyModules(modSrc, modDst, order, agentOrder)
	if err != nil {
		return nil, err
	}
	if _, err := host.Run(ctx, "", depmodPath(), "-b", dst, kver); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dst, "modules.load"), load, 0o644); err != nil {
		return nil, err
	}
	if err := host.CopyFile(filepath.Join(kroot, "boot", "config-"+kver), filepath.Join(dst, "config"), 0o644); err != nil {
		return nil, err
	}
	host.Progress(out, "extracting the uncompressed vmlinux from the bzImage")
	if err := extractVmlinux(ctx, filepath.Join(kroot, "boot", "vmlinuz-"+kver), filepath.Join(dst, "vmlinux")); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dst, "inputs"), []byte(choice.inputs()+"\n"), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dst, "version"), []byte(kver+"\n"), 0o644); err != nil {
		return nil, err
	}
	// One directory per set of inputs: branches with other module lists share the cache without
	// re-preparing the kernel each time the other one runs.
	sum := sha256.Sum256([]byte(choice.inputs()))
	final := filepath.Join(root, kver+"-"+hex.EncodeToString(sum[:])[:12])
	_ = os.RemoveAll(final)
	if err := os.Rename(dst, final); err != nil {
		return nil, err
	}
	host.Progress(out, "kernel %s ready: %d modules at boot, %d left to the agent, %s", kver, len(order), len(agentOrder), time.Since(t0).Round(time.Second))
	return kernelAt(final)
}

// copyModules copies the boot modules (order) uncompressed and without signatures, and the modules left to
// the agent (agentOrder) as they are; it returns the boot load list, "relative/path.ko [options]" lines.
func copyModules(modSrc, modDst string, order, agentOrder []string) ([]byte, error) {
	var load bytes.Buffer
	for _, rel := range agentOrder {
		if err := host.CopyFile(filepath.Join(modSrc, rel), filepath.Join(modDst, rel), 0o644); err != nil {
			return nil, err
		}
	}
	for _, rel := range order {
		// What the guest loads at boot is decompressed here (.ko.xz -> .ko). busybox's insmod (1.35) would
		// decompress .ko.xz itself, but only an uncompressed copy can lose its signature (copyModule),
		// which the kernel would otherwise check under TCG at every boot.
		src := filepath.Join(modSrc, rel)
		rel = strings.TrimSuffix(rel, ".xz")
		if err := copyModule(src, filepath.Join(modDst, rel)); err != nil {
			return nil, err
		}
		name := strings.TrimSuffix(filepath.Base(rel), ".ko")
		line := rel
		if opt := moduleOptions[strings.ReplaceAll(name, "-", "_")]; opt != "" {
			line += " " + opt
		}
		load.WriteString(line + "\n")
	}
	return load.Bytes(), nil
}

func findPreparedKernel(root, inputs string) (*Kernel, error) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") || !host.Exists(filepath.Join(root, e.Name(), "version")) {
			continue
		}
		if in, err := os.ReadFile(filepath.Join(root, e.Name(), "inputs")); err != nil || strings.TrimSpace(string(in)) != inputs {
			continue // made from other inputs: redo
		}
		names = append(names, e.Name())
	}
	if len(names) == 0 {
		return nil, nil
	}
	sort.Strings(names)
	return kernelAt(filepath.Join(root, names[len(names)-1]))
}

func kernelAt(dir string) (*Kernel, error) {
	v, err := os.ReadFile(filepath.Join(dir, "version"))
	if err != nil {
		return nil, err
	}
	k := &Kernel{
		Dir:         dir,
		Version:     strings.TrimSpace(string(v)),
		Vmlinux:     filepath.Join(dir, "vmlinux"),
		ModulesRoot: dir,
		LoadList:    filepath.Join(dir, "modules.load"),
	}
	for _, f := range []string{k.Vmlinux, k.LoadList, filepath.Join(dir, "lib", "modules", k.Version, "modules.dep")} {
		if !host.Exists(f) {
			return nil, fmt.Errorf("lab: kernel cache %s is incomplete: %s is missing", dir, f)
		}
	}
	return k, nil
}

// kernelPackage is the versioned package linux-image-amd64 depends on, e.g. linux-image-6.1.0-56-amd64.
func kernelPackage(ctx context.Context, out io.Writer) (string, error) {
	for attempt := 0; attempt < 2; attempt++ {
		s, err := host.Run(ctx, "", "apt-cache", "depends", "linux-image-amd64")
		if err == nil {
			if m := kernelPkgRe.FindStringSubmatch(s); m != nil {
				return m[1], nil
			}
		}
		if attempt == 0 {
			host.Progress(out, "apt-get update (to find the kernel package)")
			if err := host.RunAPT(ctx, out, "update", "-qq"); err != nil {
				return "", err
			}
		}
	}
	return "", fmt.Errorf("lab: apt-cache depends linux-image-amd64 names no linux-image package")
}

func depmodPath() string {
	for _, p := range []string{"/usr/sbin/depmod", "/sbin/depmod"} {
		if host.Exists(p) {
			return p
		}
	}
	return "depmod"
}

func modprobePath() string {
	for _, p := range []string{"/usr/sbin/modprobe", "/sbin/modprobe"} {
		if host.Exists(p) {
			return p
		}
	}
	return "modprobe"
}

// moduleClosure resolves guestModules and their dependencies into module paths (relative to
// lib/modules/<kver>) in load order. crc32c_generic goes before libcrc32c: that is only a softdep, which
// busybox's insmod ignores.
func moduleClosure(ctx context.Context, kroot, kver string, names []string) ([]string, error) {
	modDir := filepath.Join(kroot, "lib", "modules", kver) + "/"
	seen := map[string]bool{}
	var order []string
	add := func(name string) error {
		s, err := host.Run(ctx, "", modprobePath(), "-d", kroot, "-S", kver, "--show-depends", name)
		if err != nil {
			return fmt.Errorf("lab: kernel module %s: %w", name, err)
		}
		sc := bufio.NewScanner(strings.NewReader(s))
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) < 2 || f[0] != "insmod" {
				continue // "builtin x"
			}
			rel := strings.TrimPrefix(f[1], modDir)
			if rel == f[1] {
				return fmt.Errorf("lab: module path %s is outside %s", f[1], modDir)
			}
			if strings.HasPrefix(rel, "kernel/arch/x86/crypto/") {
				continue // CPU-accelerated crypto (a softdep): qemu64 lacks the instructions
			}
			if (strings.HasSuffix(rel, "/libcrc32c.ko") || strings.HasSuffix(rel, "/libcrc32c.ko.xz")) && !seen["crc32c"] {
				seen["crc32c"] = true
				if err := addCrc(ctx, kroot, kver, modDir, seen, &order); err != nil {
					return err
				}
			}
			if !seen[rel] {
				seen[rel] = true
				order = append(order, rel)
			}
		}
		return nil
	}
	for _, m := range names {
		if err := add(m); err != nil {
			return nil, err
		}
	}
	return order, nil
}

func addCrc(ctx context.Context, kroot, kver, modDir string, seen map[string]bool, order *[]string) error {
	s, err := host.Run(ctx, "", modprobePath(), "-d", kroot, "-S", kver, "--show-depends", "crc32c_generic")
	if err != nil {
		return nil // built in
	}
	for _, line := range strings.Split(s, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "insmod" {
			rel := strings.TrimPrefix(f[1], modDir)
			if !seen[rel] {
				seen[rel] = true
				*order = append(*order, rel)
			}
		}
	}
	return nil
}

// extractVmlinux decompresses the xz payload of a bzImage into an ELF vmlinux, which qemu boots directly
// through its PVH note: that saves the in-guest decompression (~3.5 s under TCG).
func extractVmlinux(ctx context.Context, bzImage, out string) error {
	data, err := os.ReadFile(bzImage)
	if err != nil {
		return err
	}
	f, err := os.Create(out + ".tmp")
	if err != nil {
		return err
	}
	defer os.Remove(out + ".tmp")
	i := bytes.Index(data, []byte{0xfd, '7', 'z', 'X', 'Z', 0x00})
	if i < 0 {
		// Debian's 6.12 compresses its kernel with zstd.
		z := bytes.Index(data, []byte{0x28, 0xb5, 0x2f, 0xfd})
		if z < 0 {
			f.Close()
			return fmt.Errorf("lab: %s has no xz or zstd payload", bzImage)
		}
		err := zstdPayload(data[z:], f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("lab: zstd payload of %s: %w", bzImage, err)
		}
		return checkELF(bzImage, out)
	}
	cmd := exec.CommandContext(ctx, "xz", "-dc", "--single-stream")
	cmd.Stdin = bytes.NewReader(data[i:])
	cmd.Stdout = f
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("lab: xz -d of %s: %w: %s", bzImage, err, stderr.String())
	}
	return checkELF(bzImage, out)
}

// checkELF renames out.tmp to out once it is an ELF file.
func checkELF(bzImage, out string) error {
	head := make([]byte, 4)
	g, err := os.Open(out + ".tmp")
	if err != nil {
		return err
	}
	_, err = io.ReadFull(g, head)
	g.Close()
	if err != nil || string(head) != "\x7fELF" {
		return fmt.Errorf("lab: the payload of %s is not an ELF vmlinux", bzImage)
	}
	return os.Rename(out+".tmp", out)
}

// moduleSigMagic ends a signed kernel module: module, signature, struct module_signature, magic.
const moduleSigMagic = "~Module signature appended~\n"

// copyModule copies a kernel module without its signature. Checking signatures (RSA under TCG) was a
// large part of the guest's module loading time, and the kernel does not enforce them
// (CONFIG_MODULE_SIG_FORCE is off; it only notes the taint once).
func copyModule(src, dst string) error {
	data, err := decompressModule(src)
	if err != nil {
		return err
	}
	if n := len(data); n > len(moduleSigMagic)+12 && string(data[n-len(moduleSigMagic):]) == moduleSigMagic {
		info := data[n-len(moduleSigMagic)-12 : n-len(moduleSigMagic)]
		sigLen := int(info[8])<<24 | int(info[9])<<16 | int(info[10])<<8 | int(info[11])
		if end := n - len(moduleSigMagic) - 12 - sigLen; end > 0 {
			data = data[:end]
		}
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return host.WriteFileAtomic(dst, data)
}
