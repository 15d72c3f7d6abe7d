package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1alpha1 "github.com/ipvs-operator/ipvs-operator/api/v1alpha1"
	"github.com/ipvs-operator/ipvs-operator/test/lab/controlplane"
	"github.com/ipvs-operator/ipvs-operator/test/lab/guest"
	"github.com/ipvs-operator/ipvs-operator/test/lab/host"
	"github.com/ipvs-operator/ipvs-operator/test/lab/labd"
	"github.com/ipvs-operator/ipvs-operator/test/lab/pki"
	"github.com/ipvs-operator/ipvs-operator/test/lab/topology"
	"github.com/ipvs-operator/ipvs-operator/test/lab/vm"
)

// Paths inside the guest.
const (
	// GuestShare is where the host's share directory is mounted in the guest.
	GuestShare = "/mnt/host"
	// GuestKubeconfig is the admin kubeconfig for the guest (server https://10.0.2.100:6443).
	GuestKubeconfig = GuestShare + "/kubeconfig"
	// GuestBin holds the Go binaries built for the guest (labvm, agent, operator).
	GuestBin = GuestShare + "/bin"
	// GuestLogs holds the guest's logs (labd.out, kubelet-node-a.log, kubelet-node-a.out, ...).
	GuestLogs = GuestShare + "/logs"
)

// EchoImage is the image of echo server and client pods; the lab kubelet maps it to a binary in GuestBin.
const EchoImage = "ipvs-operator/echo:lab"

// DefaultExecTimeout bounds a command run by Exec when its context has no deadline.
const DefaultExecTimeout = 60 * time.Second

// Timings are measured while a lab starts.
type Timings struct {
	// Prepare is the time Prepare took (assets were cached if it is short).
	Prepare time.Duration
	// ControlPlane is the time from starting etcd until kube-apiserver, the controller manager and the
	// scheduler were healthy.
	ControlPlane time.Duration
	// Build is the time `go build` of the guest binaries took.
	Build time.Duration
	// Boot is the time from starting qemu until LAB-READY on the console (labd and kubelets started);
	// it includes waiting for the build.
	Boot time.Duration
	// Kernel is the time from starting qemu until the guest init ran (LAB-INIT).
	Kernel time.Duration
	// ClusterDNS is the time from applying CoreDNS until its Deployment was available (Options.ClusterDNS).
	ClusterDNS time.Duration
	// Total is the time Start took, Prepare included, until both Nodes were Ready (and CoreDNS, if asked).
	Total time.Duration
}

func (t Timings) String() string {
	r := func(d time.Duration) string { return d.Round(10 * time.Millisecond).String() }
	dns := ""
	if t.ClusterDNS > 0 {
		dns = ", CoreDNS " + r(t.ClusterDNS)
	}
	return fmt.Sprintf("prepare %s, control plane %s, build %s, VM boot to LAB-READY %s (kernel to init %s)%s, total %s",
		r(t.Prepare), r(t.ControlPlane), r(t.Build), r(t.Boot), r(t.Kernel), dns, r(t.Total))
}

// Lab is a running lab: a control plane on the host and the nodes in a VM.
type Lab struct {
	opts     Options
	assets   *Assets
	runDir   string
	shareDir string
	logDir   string

	cp     *controlplane.ControlPlane
	vm     *vm.VM
	egress *egressProxy

	hostKubeconfig string
	cfg            *rest.Config
	client         client.Client
	labdURL        string
	kubeletPorts   []int // host ports of the nodes' kubelet APIs, in topology.Nodes order
	httpc          *http.Client

	// Timings of Start.
	Timings Timings

	stopOnce sync.Once
	stopErr  error
	failed   bool
	attached bool
}

// Start prepares the assets, starts the control plane, builds the guest binaries, boots the VM and waits
// until labd answers and both Nodes are Ready. On failure everything started is stopped and the error
// names the run directory with every component's log.
func Start(ctx context.Context, opts Options) (_ *Lab, err error) {
	t0 := time.Now()
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	assets, err := Prepare(ctx, opts)
	if err != nil {
		return nil, err
	}
	l := &Lab{opts: opts, assets: assets, httpc: &http.Client{}}
	l.Timings.Prepare = assets.Duration
	if err := l.makeRunDir(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			l.failed = true
			_ = l.Stop()
			err = fmt.Errorf("%w\nlab: start failed; logs of every component are in %s", err, l.runDir)
		}
	}()
	host.Progress(opts.Out, "starting (run directory %s)", l.runDir)

	p, err := pki.Generate(filepath.Join(l.runDir, "pki"))
	if err != nil {
		return nil, err
	}
	ports, err := host.FreePorts(6 + len(topology.Nodes))
	if err != nil {
		return nil, err
	}
	l.kubeletPorts = ports[6:]
	if err := shareKubeletPKI(p, l.shareDir); err != nil {
		return nil, err
	}
	// The guest's init builds the network from this before anything else is in the share.
	if err := host.WriteFileAtomic(filepath.Join(l.shareDir, "topology.env"), []byte(topology.Env())); err != nil {
		return nil, err
	}
	cpp := controlplane.Ports{EtcdClient: ports[0], EtcdPeer: ports[1], API: ports[2], KCM: ports[3], Scheduler: ports[4]}
	labdPort := ports[5]
	l.labdURL = fmt.Sprintf("http://127.0.0.1:%d", labdPort)
	if err := p.WriteKubeconfig(filepath.Join(l.shareDir, "kubeconfig"),
		fmt.Sprintf("https://%s:%d", topology.GuestAPIServerHost, topology.GuestAPIServerPort)); err != nil {
		return nil, err
	}

	// The guest binaries build while the VM boots: the guest init waits for lab.env, written last.
	buildDone := make(chan error, 1)
	go func() {
		tb := time.Now()
		err := l.buildGuestBinaries(ctx)
		l.Timings.Build = time.Since(tb)
		if err == nil {
			err = l.writeLabEnv()
		}
		buildDone <- err
	}()
	l.vm, err = vm.Start(vm.Config{
		Qemu: "qemu-system-x86_64", Vmlinux: assets.Kernel.Vmlinux, Initramfs: assets.Initramfs,
		Share: l.shareDir, MemoryMiB: opts.MemoryMiB, CPUs: opts.CPUs, APIPort: cpp.API, LabdPort: labdPort,
		KubeletPorts: l.kubeletPorts,
		Console:      filepath.Join(l.logDir, "console.log"),
	})
	if err != nil {
		_ = <-buildDone // the error that stopped the start is the one to report
		return nil, err
	}
	// The API server's way to pods and nodes (pods/proxy, logs, exec), through labd for the VM's addresses.
	if l.egress, err = startEgressProxy(l.runDir, fmt.Sprintf("127.0.0.1:%d", labdPort)); err != nil {
		_ = <-buildDone // the error that stopped the start is the one to report
		return nil, err
	}
	tcp := time.Now()
	l.cp, err = controlplane.Start(ctx, assets.KubeBinDir, l.runDir, l.logDir, p, cpp, l.egress.Socket())
	if err != nil {
		_ = <-buildDone // the error that stopped the start is the one to report
		return nil, err
	}
	l.Timings.ControlPlane = time.Since(tcp)
	host.Progress(opts.Out, "control plane up in %s (kube-apiserver https://127.0.0.1:%d)", l.Timings.ControlPlane.Round(10*time.Millisecond), cpp.API)
	l.hostKubeconfig = l.cp.AdminKubeconfig()
	l.cfg = l.cp.Config()
	if l.client, err = newClient(l.cfg); err != nil {
		_ = <-buildDone // the error that stopped the start is the one to report
		return nil, err
	}
	select {
	case err = <-buildDone:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		return nil, err
	}
	host.Progress(opts.Out, "guest binaries built in %s", l.Timings.Build.Round(10*time.Millisecond))
	if l.Timings.Boot, err = l.vm.WaitMarker("LAB-READY", opts.BootTimeout); err != nil {
		return nil, err
	}
	if d, err := l.vm.WaitMarker("LAB-INIT", time.Second); err == nil {
		l.Timings.Kernel = d
	}
	host.Progress(opts.Out, "VM ready in %s (kernel to init %s)", l.Timings.Boot.Round(10*time.Millisecond), l.Timings.Kernel.Round(10*time.Millisecond))
	if err := host.WaitFor("labd", 60*time.Second, 100*time.Millisecond, []*host.Proc{l.vm.Proc}, func() error {
		return l.ping(ctx)
	}); err != nil {
		return nil, err
	}
	if !opts.NoKubelets {
		if err := l.waitNodesReady(ctx, opts.ReadyTimeout); err != nil {
			return nil, err
		}
		if opts.ClusterDNS {
			if err := l.DeployClusterDNS(ctx, opts.ReadyTimeout); err != nil {
				return nil, err
			}
		}
		if opts.InstallOperator {
			if err := l.InstallOperator(ctx, opts.ReadyTimeout); err != nil {
				return nil, err
			}
		}
	}
	l.Timings.Total = time.Since(t0)
	if err := l.writeState(); err != nil {
		return nil, err
	}
	host.Progress(opts.Out, "lab ready: %s", l.Timings)
	return l, nil
}

func (l *Lab) makeRunDir() error {
	dir := l.opts.RunDir
	if dir == "" {
		d, err := os.MkdirTemp("", "ipvs-lab-")
		if err != nil {
			return err
		}
		dir = d
	} else {
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	l.runDir = abs
	l.logDir = filepath.Join(abs, "logs")
	l.shareDir = filepath.Join(abs, "share")
	for _, d := range []string{l.logDir, filepath.Join(l.shareDir, "bin"), filepath.Join(l.shareDir, "logs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	return nil
}

// guestPackages lists the Go main packages to build for the guest.
func (l *Lab) guestPackages() ([]string, error) {
	if len(l.opts.Packages) > 0 {
		return l.opts.Packages, nil
	}
	pkgs := []string{l.opts.LabvmPackage}
	if !hasGoFiles(filepath.Join(l.opts.RepoRoot, l.opts.LabvmPackage)) {
		return nil, fmt.Errorf("lab: the guest binary's package %s does not exist yet", l.opts.LabvmPackage)
	}
	for _, p := range []string{"./cmd/agent", "./cmd/operator"} {
		if hasGoFiles(filepath.Join(l.opts.RepoRoot, p)) {
			pkgs = append(pkgs, p)
		}
	}
	return pkgs, nil
}

func hasGoFiles(dir string) bool {
	m, _ := filepath.Glob(filepath.Join(dir, "*.go"))
	return len(m) > 0
}

// buildGuestBinaries installs the guest packages (CGO_ENABLED=0) into <cache>/guest-bin and copies
// them into <share>/bin. `go install` leaves an up-to-date binary alone, so an unchanged tree costs no
// link (a link of each binary takes seconds on a busy 2-core machine).
func (l *Lab) buildGuestBinaries(ctx context.Context) error {
	pkgs, err := l.guestPackages()
	if err != nil {
		return err
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	gobin := filepath.Join(l.opts.CacheDir, "guest-bin")
	if err := os.MkdirAll(gobin, 0o755); err != nil {
		return err
	}
	unlock, err := lockFile(ctx, filepath.Join(l.opts.CacheDir, ".guest-bin.lock"), l.opts.Out)
	if err != nil {
		return err
	}
	defer unlock()
	args := append([]string{"install", "-ldflags=-s -w"}, pkgs...)
	host.Progress(l.opts.Out, "building guest binaries: CGO_ENABLED=0 GOBIN=%s go %s", gobin, strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, goBin, args...)
	cmd.Dir = l.opts.RepoRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOBIN="+gobin)
	out, err := cmd.CombinedOutput()
	_ = os.WriteFile(filepath.Join(l.logDir, "go-build.log"), out, 0o644)
	if err != nil {
		return fmt.Errorf("lab: go install of the guest binaries: %w\n%s", err, host.Tail(string(out), 4000))
	}
	for _, p := range pkgs {
		name := filepath.Base(p)
		if err := host.CopyFile(filepath.Join(gobin, name), filepath.Join(l.shareDir, "bin", name), 0o755); err != nil {
			return err
		}
	}
	for _, b := range l.opts.ExtraBinaries {
		if err := host.CopyFile(b, filepath.Join(l.shareDir, "bin", filepath.Base(b)), 0o755); err != nil {
			return err
		}
	}
	// CoreDNS, for the image-map entry of its image (coreDNSImageMap).
	if l.opts.ClusterDNS {
		if err := host.CopyFile(coreDNSBinary(l.opts), filepath.Join(l.shareDir, "bin", "coredns"), 0o755); err != nil {
			return fmt.Errorf("lab: CoreDNS binary (hack/build-coredns.sh): %w", err)
		}
	}
	return nil
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// writeLabEnv writes the settings the guest init reads; writing it tells the guest to go on.
func (l *Lab) writeLabEnv() error {
	kubelets := "1"
	if l.opts.NoKubelets {
		kubelets = "0"
	}
	labvm := filepath.Base(l.opts.LabvmPackage)
	var b strings.Builder
	fmt.Fprintf(&b, "# written by test/lab on the host\n")
	fmt.Fprintf(&b, "LAB_LABD_ADDR=%s\n", shellQuote(fmt.Sprintf("%s:%d", topology.GuestIP, topology.LabdPort)))
	fmt.Fprintf(&b, "LAB_LABVM=%s\n", shellQuote(GuestBin+"/"+labvm))
	fmt.Fprintf(&b, "LAB_KUBECONFIG=%s\n", shellQuote(GuestKubeconfig))
	fmt.Fprintf(&b, "LAB_IMAGE_MAP=%s\n", shellQuote(l.opts.ImageMap))
	fmt.Fprintf(&b, "LAB_LOGS=%s\n", shellQuote(GuestLogs))
	fmt.Fprintf(&b, "LAB_KUBELETS=%s\n", kubelets)
	// The init expands LAB_KUBELET_ARGS unquoted: arguments must not contain spaces.
	// Every lab kubelet names the cluster DNS in ClusterFirst pods' resolv.conf, as a cluster's kubelets do,
	// whether or not this lab runs CoreDNS (Options.ClusterDNS).
	kubeletArgs := append([]string{"--cluster-dns=" + topology.ClusterDNSIP, "--cluster-domain=" + topology.ClusterDomain}, l.opts.KubeletArgs...)
	fmt.Fprintf(&b, "LAB_KUBELET_ARGS=%s\n", shellQuote(strings.Join(kubeletArgs, " ")))
	for i, port := range l.kubeletPorts {
		fmt.Fprintf(&b, "LAB_KUBELET_API_%d=%s\n", i, shellQuote(kubeletAPIArgs(i, port)))
	}
	return host.WriteFileAtomic(filepath.Join(l.shareDir, "lab.env"), []byte(b.String()))
}

func newClient(cfg *rest.Config) (client.Client, error) {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, apiextensionsv1.AddToScheme, lbv1alpha1.AddToScheme} {
		if err := add(scheme); err != nil {
			return nil, err
		}
	}
	return client.New(cfg, client.Options{Scheme: scheme})
}

// waitNodesReady waits until every lab node exists and is Ready.
func (l *Lab) waitNodesReady(ctx context.Context, timeout time.Duration) error {
	var watch []*host.Proc
	if l.vm != nil {
		watch = append(watch, l.vm.Proc)
	}
	if l.cp != nil {
		watch = append(watch, l.cp.Procs()...)
	}
	return host.WaitFor("Nodes Ready", timeout, 250*time.Millisecond, watch, func() error {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var nodes corev1.NodeList
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := l.client.List(cctx, &nodes); err != nil {
			return err
		}
		ready := map[string]bool{}
		for _, n := range nodes.Items {
			for _, c := range n.Status.Conditions {
				if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
					ready[n.Name] = true
				}
			}
		}
		var notReady []string
		for _, n := range topology.Nodes {
			if !ready[n.Name] {
				notReady = append(notReady, n.Name)
			}
		}
		if len(notReady) > 0 {
			return fmt.Errorf("not Ready: %s (guest logs: %s)", strings.Join(notReady, ", "), filepath.Join(l.shareDir, "logs"))
		}
		return nil
	})
}

// Stop powers the VM off, stops the control plane and removes the run directory (kept when Start failed
// or with KeepRunDir / LAB_KEEP=1). It is safe to call more than once.
func (l *Lab) Stop() error {
	if l == nil {
		return nil
	}
	l.stopOnce.Do(func() {
		if l.attached {
			return
		}
		var errs []error
		if l.vm != nil {
			grace := time.Duration(0)
			if !l.vm.Proc.Exited() && l.labdURL != "" {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				if l.post(ctx, "/poweroff", struct{}{}, nil) == nil {
					grace = 3 * time.Second
				}
				cancel()
			}
			errs = append(errs, l.vm.Stop(grace))
		}
		errs = append(errs, l.cp.Stop(), l.egress.Close())
		l.stopErr = errorsJoin(errs...)
		if l.runDir != "" {
			_ = os.Remove(filepath.Join(l.runDir, stateFile))
		}
		if l.runDir != "" {
			if l.failed || l.opts.KeepRunDir || l.stopErr != nil {
				host.Progress(l.opts.Out, "stopped; logs kept in %s", l.runDir)
			} else {
				_ = os.RemoveAll(l.runDir)
			}
		}
	})
	return l.stopErr
}

// Keep makes Stop keep the run directory (e.g. because a test failed and its logs matter).
func (l *Lab) Keep() { l.opts.KeepRunDir = true }

// RunDir is the lab's run directory: logs/ (host components and the VM console), pki/, kubeconfig and
// share/ (the VM's /mnt/host: bin/, kubeconfig, logs/).
func (l *Lab) RunDir() string { return l.runDir }

// ShareDir is the host directory mounted at /mnt/host in the guest.
func (l *Lab) ShareDir() string { return l.shareDir }

// LogDir holds the host components' logs and the VM console log (console.log).
func (l *Lab) LogDir() string { return l.logDir }

// Kubeconfig is the path of an admin kubeconfig for the host.
func (l *Lab) Kubeconfig() string { return l.hostKubeconfig }

// Config is an admin REST config for the host.
func (l *Lab) Config() *rest.Config { return rest.CopyConfig(l.cfg) }

// Client is a cluster-admin client whose scheme knows client-go's types, CRDs and this project's API.
func (l *Lab) Client() client.Client { return l.client }

// Nodes are the lab's node names, sorted (their network namespaces have the same names).
func (l *Lab) Nodes() []string {
	names := make([]string, 0, len(topology.Nodes))
	for _, n := range topology.Nodes {
		names = append(names, n.Name)
	}
	sort.Strings(names)
	return names
}

// LabdURL is the host-side URL of labd.
func (l *Lab) LabdURL() string { return l.labdURL }

// ExecError is returned by Exec when the command ran and exited non-zero, or could not run.
type ExecError struct {
	Netns    string
	Argv     []string
	ExitCode int
	Stdout   string
	Stderr   string
	Reason   string
}

func (e *ExecError) Error() string {
	where := e.Netns
	if where == "" {
		where = "guest root netns"
	}
	msg := fmt.Sprintf("lab exec [%s] %s: exit code %d", where, strings.Join(e.Argv, " "), e.ExitCode)
	if e.Reason != "" {
		msg += " (" + e.Reason + ")"
	}
	if s := strings.TrimSpace(e.Stdout); s != "" {
		msg += "\nstdout: " + host.Tail(s, 4000)
	}
	if s := strings.TrimSpace(e.Stderr); s != "" {
		msg += "\nstderr: " + host.Tail(s, 4000)
	}
	return msg
}

func (l *Lab) post(ctx context.Context, path string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, l.labdURL+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := l.httpc.Do(req)
	if err != nil {
		return fmt.Errorf("lab: labd %s: %w", path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("lab: labd %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("lab: labd %s: %s: %s", path, resp.Status, host.Tail(string(data), 1000))
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

func (l *Lab) ping(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(cctx, http.MethodGet, l.labdURL+"/healthz", nil)
	if err != nil {
		return err
	}
	resp, err := l.httpc.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("labd /healthz: %s", resp.Status)
	}
	return nil
}

// Run sends an exec request to labd as is. TimeoutSeconds defaults to the context's deadline, or
// DefaultExecTimeout.
func (l *Lab) Run(ctx context.Context, req labd.ExecRequest) (*labd.ExecResponse, error) {
	if req.TimeoutSeconds == 0 && !req.Background {
		timeout := DefaultExecTimeout
		if dl, ok := ctx.Deadline(); ok {
			timeout = time.Until(dl)
		}
		if timeout < 100*time.Millisecond {
			timeout = 100 * time.Millisecond
		}
		req.TimeoutSeconds = timeout.Seconds()
	}
	var resp labd.ExecResponse
	if err := l.post(ctx, "/exec", req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

func (l *Lab) exec(ctx context.Context, netns string, combined bool, argv []string) (string, error) {
	resp, err := l.Run(ctx, labd.ExecRequest{Netns: netns, Argv: argv, Combined: combined})
	if err != nil {
		return "", err
	}
	if resp.ExitCode != 0 || resp.Error != "" {
		return resp.Stdout, &ExecError{Netns: netns, Argv: argv, ExitCode: resp.ExitCode, Stdout: resp.Stdout,
			Stderr: resp.Stderr, Reason: resp.Error}
	}
	return resp.Stdout, nil
}

// Exec runs argv in the guest's network namespace netns ("" = the guest's root namespace, "node-a",
// "node-b", "outside", "pod-<namespace>-<name>") and returns its stdout. A non-zero exit is an
// *ExecError carrying stdout and stderr.
func (l *Lab) Exec(ctx context.Context, netns string, argv ...string) (string, error) {
	return l.exec(ctx, netns, false, argv)
}

// ExecCombined is Exec with stderr interleaved into the returned output.
func (l *Lab) ExecCombined(ctx context.Context, netns string, argv ...string) (string, error) {
	return l.exec(ctx, netns, true, argv)
}

// Background starts argv in netns without waiting and returns its guest pid; its output is appended to
// logFile (a guest path, e.g. GuestLogs+"/x.log"; "" discards it). Stop it with Kill.
func (l *Lab) Background(ctx context.Context, netns, logFile string, argv ...string) (int, error) {
	resp, err := l.Run(ctx, labd.ExecRequest{Netns: netns, Argv: argv, Background: true, LogFile: logFile})
	if err != nil {
		return 0, err
	}
	if resp.Error != "" {
		return 0, &ExecError{Netns: netns, Argv: argv, ExitCode: resp.ExitCode, Reason: resp.Error}
	}
	return resp.Pid, nil
}

// Kill sends SIGKILL to a background process's process group.
func (l *Lab) Kill(ctx context.Context, pid int) error {
	var resp map[string]string
	if err := l.post(ctx, "/kill", labd.KillRequest{Pid: pid}, &resp); err != nil {
		return err
	}
	if resp["error"] != "" {
		return fmt.Errorf("lab: kill %d: %s", pid, resp["error"])
	}
	return nil
}

// Signal sends sig to a background process's process group (e.g. SIGTERM, to let it end cleanly).
func (l *Lab) Signal(ctx context.Context, pid int, sig syscall.Signal) error {
	var resp map[string]string
	if err := l.post(ctx, "/kill", labd.KillRequest{Pid: pid, Signal: int(sig)}, &resp); err != nil {
		return err
	}
	if resp["error"] != "" {
		return fmt.Errorf("lab: signal %d to %d: %s", sig, pid, resp["error"])
	}
	return nil
}

// Wait waits up to timeout for a background process; running is true if it has not ended.
func (l *Lab) Wait(ctx context.Context, pid int, timeout time.Duration) (running bool, exitCode int, err error) {
	var resp labd.WaitResponse
	if err := l.post(ctx, "/wait", labd.WaitRequest{Pid: pid, TimeoutSeconds: timeout.Seconds()}, &resp); err != nil {
		return false, 0, err
	}
	return resp.Running, resp.ExitCode, nil
}

// Dial opens and closes a TCP connection from netns to address (host:port) in the guest, without
// starting a process; nil means it connected within timeout (default 5 s when 0).
func (l *Lab) Dial(ctx context.Context, netns, address string, timeout time.Duration) error {
	var resp labd.DialResponse
	if err := l.post(ctx, "/dial", labd.DialRequest{Netns: netns, Address: address, TimeoutSeconds: timeout.Seconds()}, &resp); err != nil {
		return err
	}
	if !resp.Connected {
		where := netns
		if where == "" {
			where = "guest root netns"
		}
		return fmt.Errorf("lab: [%s] connect %s: %s", where, address, resp.Error)
	}
	return nil
}

// PodNetns is the lab kubelet's network namespace name of a pod.
func PodNetns(pod types.NamespacedName) string { return "pod-" + pod.Namespace + "-" + pod.Name }

// NodeExec runs argv in a node's network namespace and returns its combined output (dataplane.Driver).
func (l *Lab) NodeExec(ctx context.Context, node string, argv ...string) (string, error) {
	return l.ExecCombined(ctx, node, argv...)
}

// PodExec runs argv in a pod's network namespace and returns its combined output (dataplane.Driver).
// It runs through `ip netns exec`, as the lab kubelet starts the pod's containers, so that the command sees
// the pod's own /etc files (its resolv.conf) as well as its network.
func (l *Lab) PodExec(ctx context.Context, pod types.NamespacedName, argv ...string) (string, error) {
	netns := PodNetns(pod)
	return l.ExecCombined(ctx, netns, append([]string{"/usr/sbin/ip", "netns", "exec", netns}, argv...)...)
}

// AgentExec runs the agent binary in a node's network namespace, where the lab kubelet runs that node's
// agent, and returns its combined output (dataplane.Driver).
func (l *Lab) AgentExec(ctx context.Context, node string, args ...string) (string, error) {
	return l.ExecCombined(ctx, node, append([]string{GuestBin + "/agent"}, args...)...)
}

// OutsideExec runs argv on the outside host and returns its combined output (dataplane.Driver).
func (l *Lab) OutsideExec(ctx context.Context, argv ...string) (string, error) {
	return l.ExecCombined(ctx, "outside", argv...)
}

// Image is the echo server and client image (dataplane.Driver).
func (l *Lab) Image() string { return EchoImage }

// ClientCommand is the echo client's argv prefix in the guest (dataplane.Driver).
func (l *Lab) ClientCommand() []string { return []string{GuestBin + "/labvm", "client"} }

// loadConfig reads a kubeconfig file.
func loadConfig(path string) (*rest.Config, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = 100, 200
	return cfg, nil
}

// Kernel is the guest kernel this lab booted.
func (l *Lab) Kernel() *guest.Kernel { return l.assets.Kernel }
