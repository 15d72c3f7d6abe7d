package lab

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/ipvs-operator/ipvs-operator/test/lab/controlplane"
	"github.com/ipvs-operator/ipvs-operator/test/lab/guest"
	"github.com/ipvs-operator/ipvs-operator/test/lab/host"
)

// Options configure Prepare and Start. The zero value works from anywhere inside the repository.
type Options struct {
	// RepoRoot is the ipvs-operator checkout (default: found from the working directory).
	RepoRoot string
	// CacheDir holds the prepared assets (default $LAB_CACHE or <repo>/bin/lab).
	CacheDir string
	// KubeBinDir holds etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kubectl
	// (default $LAB_KUBE_BIN or <repo>/bin/k8s/<KubeVersion>, built by hack/build-kube.sh when missing).
	KubeBinDir string
	// Out receives progress lines (default os.Stdout; io.Discard silences them).
	Out io.Writer
	// SkipPackages does not check or install Debian packages.
	SkipPackages bool
	// SkipKubeBuild fails instead of running hack/build-kube.sh when a Kubernetes binary is missing.
	SkipKubeBuild bool
	// NoKube makes Prepare ignore the Kubernetes binaries (for preparing only the VM's assets).
	NoKube bool
	// Kernel is the guest kernel: "6.1" or "6.12" (default $LAB_KERNEL, else 6.1).
	Kernel string

	// RunDir is where a lab keeps its logs, certificates, etcd data and the VM's share (default: a new
	// temporary directory). Start empties it first.
	RunDir string
	// KeepRunDir keeps RunDir after Stop (also: LAB_KEEP=1). It is always kept when Start fails.
	KeepRunDir bool
	// MemoryMiB and CPUs size the VM (default 3072 and 2).
	MemoryMiB int
	CPUs      int
	// Packages are the Go main packages built (CGO_ENABLED=0) into <share>/bin; default: the labvm,
	// agent and operator packages that exist. The binary's name is the package directory's name.
	Packages []string
	// LabvmPackage overrides the package of the guest binary (default ./test/lab/cmd/labvm).
	LabvmPackage string
	// NoKubelets boots the VM without starting the lab kubelets and does not wait for Nodes.
	NoKubelets bool
	// ImageMap is the lab kubelet's --image-map, comma-separated MATCH=DIR[:ENTRYPOINT[:CMD]] (default
	// DefaultImageMap).
	ImageMap string
	// ExtraBinaries are host files copied into <share>/bin next to the guest binaries (upstream's agnhost
	// for test/upstream).
	ExtraBinaries []string
	// ClusterDNS runs CoreDNS behind the kube-dns Service (ClusterDNSIP) and makes Start wait until it is
	// available. Its name answers only once something serves ClusterIPs (the agents in scope all).
	ClusterDNS bool
	// InstallOperator installs the operator from config/ as InstallOptions says (agents in scope all) and
	// makes Start wait until the operator and its agents are ready (needs bin/kustomize).
	InstallOperator bool
	// KubeletArgs are added to every lab kubelet's command line.
	KubeletArgs []string
	// BootTimeout bounds qemu start to LAB-READY (default 3 min); ReadyTimeout bounds the wait for the
	// Nodes to be Ready after that (default 3 min).
	BootTimeout  time.Duration
	ReadyTimeout time.Duration
}

// DefaultImageMap maps the project's images and CoreDNS's to the guest's binaries.
const DefaultImageMap = "ipvs-operator/=" + GuestBin + "," + coreDNSImageMap

func (o *Options) defaults() error {
	if o.Out == nil {
		o.Out = os.Stdout
	}
	if o.RepoRoot == "" {
		r, err := RepoRoot()
		if err != nil {
			return err
		}
		o.RepoRoot = r
	}
	if o.CacheDir == "" {
		o.CacheDir = CacheDir(o.RepoRoot)
	}
	if o.Kernel == "" {
		o.Kernel = os.Getenv(guest.EnvKernel)
	}
	if o.KubeBinDir == "" {
		o.KubeBinDir = os.Getenv(EnvKubeBin)
	}
	if o.KubeBinDir == "" {
		o.KubeBinDir = filepath.Join(o.RepoRoot, "bin", "k8s", KubeVersion)
	}
	if o.MemoryMiB == 0 {
		o.MemoryMiB = 3072
	}
	if o.CPUs == 0 {
		o.CPUs = 2
	}
	if o.LabvmPackage == "" {
		o.LabvmPackage = "./test/lab/cmd/labvm"
	}
	if o.ImageMap == "" {
		o.ImageMap = DefaultImageMap
	}
	if o.BootTimeout == 0 {
		o.BootTimeout = 3 * time.Minute
	}
	if o.ReadyTimeout == 0 {
		o.ReadyTimeout = 3 * time.Minute
	}
	if os.Getenv(EnvKeep) == "1" {
		o.KeepRunDir = true
	}
	return nil
}

// Assets are the prepared, cached inputs of a lab.
type Assets struct {
	CacheDir string
	// Kernel is the guest kernel with its module tree.
	Kernel *guest.Kernel
	// Initramfs is the uncompressed cpio archive the VM boots.
	Initramfs string
	// KubeBinDir holds the control-plane binaries.
	KubeBinDir string
	// Duration is how long Prepare took.
	Duration time.Duration
}

// Prepare makes the lab's assets, reusing what is cached: Debian packages (installed when missing), the
// Debian kernel and its module closure, the uncompressed vmlinux, the initramfs (rebuilt when an input
// changes) and the Kubernetes binaries (hack/build-kube.sh when missing). Concurrent calls, also from
// other processes, are serialized.
func Prepare(ctx context.Context, opts Options) (*Assets, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	t0 := time.Now()
	if err := os.MkdirAll(opts.CacheDir, 0o755); err != nil {
		return nil, err
	}
	unlock, err := lockFile(ctx, filepath.Join(opts.CacheDir, ".prepare.lock"), opts.Out)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if !opts.SkipPackages {
		if err := EnsurePackages(ctx, opts.Out); err != nil {
			return nil, err
		}
	}
	k, err := guest.PrepareKernel(ctx, opts.CacheDir, opts.Kernel, opts.Out)
	if err != nil {
		return nil, err
	}
	initrd, err := guest.BuildInitramfs(ctx, opts.CacheDir, k, opts.Out)
	if err != nil {
		return nil, err
	}
	if !opts.NoKube {
		if err := ensureKube(ctx, opts); err != nil {
			return nil, err
		}
		if err := ensureCoreDNS(ctx, opts); err != nil {
			return nil, err
		}
	}
	return &Assets{CacheDir: opts.CacheDir, Kernel: k, Initramfs: initrd, KubeBinDir: opts.KubeBinDir, Duration: time.Since(t0)}, nil
}

// ensureKube builds the missing Kubernetes binaries with hack/build-kube.sh.
func ensureKube(ctx context.Context, opts Options) error {
	missing := controlplane.MissingKubeBinaries(opts.KubeBinDir)
	if len(missing) == 0 {
		return nil
	}
	if opts.SkipKubeBuild {
		return fmt.Errorf("lab: missing Kubernetes binaries in %s: %s (run hack/build-kube.sh)", opts.KubeBinDir,
			strings.Join(missing, " "))
	}
	lock := filepath.Join(opts.RepoRoot, "bin", ".build-kube.lock")
	if err := os.MkdirAll(filepath.Dir(lock), 0o755); err != nil {
		return err
	}
	unlock, err := lockFile(ctx, lock, opts.Out)
	if err != nil {
		return err
	}
	defer unlock()
	if missing = controlplane.MissingKubeBinaries(opts.KubeBinDir); len(missing) == 0 {
		return nil
	}
	hint := ""
	for _, m := range missing {
		if m == "kube-apiserver" {
			hint = " (first run: kube-apiserver alone takes ~9 min on 2 cores)"
		}
	}
	host.Progress(opts.Out, "building %s with hack/build-kube.sh%s...", strings.Join(missing, ", "), hint)
	t0 := time.Now()
	env := []string{"KUBE_VERSION=" + KubeVersion, "KUBE_BIN_DIR=" + opts.KubeBinDir}
	if err := host.RunStreaming(ctx, opts.Out, "  ", env, opts.RepoRoot, "bash", append([]string{filepath.Join(opts.RepoRoot, "hack", "build-kube.sh")}, missing...)...); err != nil {
		return err
	}
	host.Progress(opts.Out, "Kubernetes binaries built in %s", time.Since(t0).Round(time.Second))
	if missing = controlplane.MissingKubeBinaries(opts.KubeBinDir); len(missing) > 0 {
		return fmt.Errorf("lab: hack/build-kube.sh did not build %s", strings.Join(missing, " "))
	}
	return nil
}

// lockFile takes an exclusive flock on path, saying so when it has to wait.
func lockFile(ctx context.Context, path string, out io.Writer) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		host.Progress(out, "waiting for another lab process holding %s", path)
		for {
			if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err == nil {
				break
			}
			select {
			case <-ctx.Done():
				f.Close()
				return nil, ctx.Err()
			case <-time.After(500 * time.Millisecond):
			}
		}
	}
	return func() { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
}
