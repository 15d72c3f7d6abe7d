package guest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/ipvs-operator/ipvs-operator/test/lab/host"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// EnvKernel (LAB_KERNEL) selects the guest kernel: "6.1" (the default) or "6.12".
const EnvKernel = "LAB_KERNEL"

// Kernel choices.
const (
	Kernel61  = "6.1"
	Kernel612 = "6.12"
)

// kernelChoice is one Debian kernel the lab can boot.
type kernelChoice struct {
	name string
	// dir and initramfsDir are the cache subdirectories of its prepared kernel and its initramfs.
	dir, initramfsDir string
	// pkg names the linux-image package to download.
	pkg func(ctx context.Context, out io.Writer) (string, error)
	// agentLoads are modules the guest does not load at boot: they stay in the module tree as Debian
	// ships them (compressed) and the agent's init container loads them, as on a user's node. Every
	// other module the guest needs is loaded at boot by busybox's insmod, decompressed on the host.
	agentLoads []string
}

var kernelChoices = map[string]kernelChoice{
	// Debian 12's own kernel: uncompressed modules, all loaded at boot (the lab's first kernel; its
	// cache layout is kept so a prepared 6.1 stays valid).
	Kernel61: {name: Kernel61, dir: "kernel", initramfsDir: "initramfs", pkg: kernelPackage},
	// Debian 12's 6.12 (security updates): .ko.xz modules, CONFIG_MODULE_DECOMPRESS=y, a zstd bzImage.
	Kernel612: {name: Kernel612, dir: "kernel-6.12", initramfsDir: "initramfs-6.12", pkg: newestPackage(`linux-image-6\.12\.([0-9]+)\+deb12-amd64-unsigned`),
		agentLoads: []string{"ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_lc", "ip_vs_wlc", "ip_vs_sh", "ip_vs_dh", "ip_vs_mh", "ip_vs_sed", "ip_vs_nq", "dummy"}},
}

// chooseKernel returns the kernel named by name ("" is the default).
func chooseKernel(name string) (kernelChoice, error) {
	if name == "" {
		name = Kernel61
	}
	c, ok := kernelChoices[name]
	if !ok {
		return kernelChoice{}, fmt.Errorf("lab: unknown kernel %q (%s): one of %s, %s", name, EnvKernel, Kernel61, Kernel612)
	}
	return c, nil
}

// bootModules are the modules the guest loads at boot with this kernel.
func (c kernelChoice) bootModules() []string {
	return slices.DeleteFunc(slices.Clone(guestModules), func(m string) bool {
		return slices.Contains(c.agentLoads, m) || slices.Contains(c.agentLoads, loadsWith[m])
	})
}

// loadsWith names, for a boot module that depends on one the agent loads itself, that module: booting it
// would load the agent's module before the agent does (xt_ipvs, kube-proxy's ipvs-mode match, needs ip_vs).
var loadsWith = map[string]string{"xt_ipvs": "ip_vs"}

// inputs extends kernelInputs for kernels other than the first, whose cache key stays what it was.
func (c kernelChoice) inputs() string {
	if len(c.agentLoads) == 0 {
		return kernelInputs()
	}
	return kernelInputs() + "-" + c.name + "-agent-loads-" + strings.Join(c.agentLoads, ",")
}

// newestPackage finds the newest package whose name matches re (its first group is the version number
// compared). Equivalent to: `apt-cache search --names-only RE | sort -V | tail -1`.
func newestPackage(re string) func(ctx context.Context, out io.Writer) (string, error) {
	rx := regexp.MustCompile(`^` + re + `$`)
	return func(ctx context.Context, out io.Writer) (string, error) {
		for attempt := 0; attempt < 2; attempt++ {
			s, err := host.Run(ctx, "", "apt-cache", "search", "--names-only", "^"+re+"$")
			best, bestN := "", -1
			for _, line := range strings.Split(s, "\n") {
				name, _, _ := strings.Cut(line, " ")
				if m := rx.FindStringSubmatch(name); m != nil {
					if n, _ := strconv.Atoi(m[1]); n > bestN {
						best, bestN = name, n
					}
				}
			}
			if err == nil && best != "" {
				return best, nil
			}
			if attempt == 0 {
				host.Progress(out, "apt-get update (to find the kernel package)")
				if err := host.RunAPT(ctx, out, "update", "-qq"); err != nil {
					return "", err
				}
			}
		}
		return "", fmt.Errorf("lab: apt-cache finds no package matching %s", re)
	}
}

// decompressModule returns a module file's contents, decompressed when its name ends in .xz.
// Equivalent to: `xz -dc FILE`.
func decompressModule(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil || !strings.HasSuffix(path, ".ko.xz") {
		return data, err
	}
	r, err := xz.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("lab: %s: %w", path, err)
	}
	return io.ReadAll(r)
}

// zstdPayload decompresses a zstd bzImage payload. The kernel's build appends the uncompressed size after
// the frame, which a zstd reader sees as a bad next frame: that ends the payload.
func zstdPayload(data []byte, w io.Writer) error {
	z, err := zstd.NewReader(bytes.NewReader(data), zstd.WithDecoderMaxWindow(1<<30), zstd.WithDecoderConcurrency(1))
	if err != nil {
		return err
	}
	defer z.Close()
	if _, err := io.Copy(w, z); err != nil && !errors.Is(err, zstd.ErrMagicMismatch) {
		return err
	}
	return nil
}
