package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/ipvs-operator/ipvs-operator/test/lab/host"
	"github.com/ipvs-operator/ipvs-operator/test/lab/topology"
)

// State describes a running lab; Start writes it to <run dir>/state.json once the lab is ready and Stop
// removes it. Attach, Status, Down and `lab exec` find a lab through it.
type State struct {
	// Pid is the process that owns the lab (`lab up`).
	Pid        int       `json:"pid"`
	RunDir     string    `json:"runDir"`
	ShareDir   string    `json:"shareDir"`
	Kubeconfig string    `json:"kubeconfig"`
	LabdURL    string    `json:"labdURL"`
	Started    time.Time `json:"started"`
	Timings    string    `json:"timings"`
	// Procs are the lab's child processes (name and pid), for Down to clean up after a crashed owner.
	Procs []StateProc `json:"procs"`
}

// StateProc is one child process of a lab started by Up.
type StateProc struct {
	Name string `json:"name"`
	Pid  int    `json:"pid"`
	Exe  string `json:"exe"`
}

// UpRunDir is the run directory of the lab Up starts: <cache>/run.
func UpRunDir(opts Options) string { return filepath.Join(opts.CacheDir, "run") }

// EnvRunDir names the run directory of the lab that Attach, Status, Down and `lab exec` use (default:
// UpRunDir). Any lab's run directory works, e.g. one a test suite or the demo started.
const EnvRunDir = "LAB_RUN_DIR"

const stateFile = "state.json"

// attachRunDir is the run directory Attach and friends look at.
func attachRunDir(opts Options) string {
	if d := os.Getenv(EnvRunDir); d != "" {
		if abs, err := filepath.Abs(d); err == nil {
			return abs
		}
		return d
	}
	return UpRunDir(opts)
}

func statePath(opts Options) string { return filepath.Join(attachRunDir(opts), stateFile) }

// writeState records a ready lab in its run directory.
func (l *Lab) writeState() error {
	st := State{Pid: os.Getpid(), RunDir: l.runDir, ShareDir: l.shareDir, Kubeconfig: l.hostKubeconfig,
		LabdURL: l.labdURL, Started: time.Now(), Timings: l.Timings.String()}
	var procs []*host.Proc
	if l.vm != nil {
		procs = append(procs, l.vm.Proc)
	}
	if l.cp != nil {
		procs = append(procs, l.cp.Procs()...)
	}
	for _, p := range procs {
		if p == nil {
			continue
		}
		exe, err := filepath.EvalSymlinks(p.Path())
		if err != nil {
			exe = p.Path()
		}
		st.Procs = append(st.Procs, StateProc{Name: p.Name(), Pid: p.PID(), Exe: exe})
	}
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return host.WriteFileAtomic(filepath.Join(l.runDir, stateFile), data)
}

// envUpChild marks the background process of `lab up --detach`.
const envUpChild = "LAB_UP_CHILD"

// ReadState returns the state of the lab in $LAB_RUN_DIR, or else of the one Up started, or an error if
// none runs.
func ReadState(opts Options) (*State, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	return readState(statePath(opts))
}

func readState(path string) (*State, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("lab: no lab is running (no %s); start one with `go run ./test/lab/cmd/lab up`", path)
		}
		return nil, err
	}
	var st State
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("lab: %s: %w", path, err)
	}
	return &st, nil
}

func alive(pid int) bool { return pid > 0 && syscall.Kill(pid, 0) == nil }

// Up starts a lab in <cache>/run for interactive use and keeps it until SIGINT or SIGTERM (or `lab
// down`). With detach, it re-executes the current program with its arguments in a new session, waits
// until that lab is ready, and returns while it keeps running.
func Up(ctx context.Context, opts Options, detach bool) error {
	if err := opts.defaults(); err != nil {
		return err
	}
	if st, err := readState(filepath.Join(UpRunDir(opts), stateFile)); err == nil && alive(st.Pid) {
		return fmt.Errorf("lab: a lab is already running (pid %d, %s); stop it with `go run ./test/lab/cmd/lab down`", st.Pid, st.RunDir)
	}
	if detach && os.Getenv(envUpChild) != "1" {
		return upDetached(ctx, opts)
	}
	opts.RunDir = UpRunDir(opts)
	opts.KeepRunDir = true

	ctx, stopSignals := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stopSignals()
	l, err := Start(ctx, opts)
	if err != nil {
		return err
	}
	defer func() { _ = l.Stop() }() // idempotent: the explicit Stop below reports its error
	printUsage(opts.Out, opts, l)
	if detach {
		fmt.Fprintf(opts.Out, "lab: running in the background (pid %d); stop it with: go run ./test/lab/cmd/lab down\n", os.Getpid())
	} else {
		fmt.Fprintf(opts.Out, "lab: running; press Ctrl-C to stop it\n")
	}
	select {
	case <-ctx.Done():
		host.Progress(opts.Out, "stopping")
	case <-l.vm.Proc.Done():
		return fmt.Errorf("lab: the VM stopped (%v); console: %s", l.vm.Proc.Err(), l.vm.Console()) //nolint:errorlint // cmd.Wait's result, nil after a clean exit: reported, not wrapped
	}
	if err := l.Stop(); err != nil {
		return err
	}
	host.Progress(opts.Out, "stopped")
	return nil
}

func printUsage(w io.Writer, opts Options, l *Lab) {
	rel := func(p string) string {
		if r, err := filepath.Rel(opts.RepoRoot, p); err == nil && !strings.HasPrefix(r, "..") {
			return r
		}
		return p
	}
	installed := ""
	if opts.InstallOperator {
		installed += "\n  the operator is installed from config/; its agents serve every ClusterIP Service (scope all)"
	}
	if opts.ClusterDNS {
		installed += fmt.Sprintf("\n  CoreDNS %s serves %s at kube-dns %s", CoreDNSVersion, topology.ClusterDomain, topology.ClusterDNSIP)
	}
	fmt.Fprintf(w, `
lab: ready (%s)%s
  kubeconfig:   %s
    export KUBECONFIG=%s
  try:
    kubectl get nodes,pods -A -o wide
    go run ./test/lab/cmd/lab exec node-a ipvsadm -Ln    (IPVS on a node; also node-b, outside, pod-<namespace>-<name>, root)
  logs:         %s (host components, VM console)
                %s (labd, kubelets)
  guest share:  %s = /mnt/host in the VM (bin/labvm, bin/agent, bin/operator)

`, l.Timings, installed, rel(l.hostKubeconfig), l.hostKubeconfig, rel(l.logDir), rel(filepath.Join(l.shareDir, "logs")), rel(l.shareDir))
}

// upDetached runs `<this program> up` in a new session with its output in <cache>/lab-up.log and waits
// until its lab is ready.
func upDetached(ctx context.Context, opts Options) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	logPath := filepath.Join(opts.CacheDir, "lab-up.log")
	if err := os.MkdirAll(opts.CacheDir, 0o755); err != nil {
		return err
	}
	upState := filepath.Join(UpRunDir(opts), stateFile)
	_ = os.Remove(upState)
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(exe, os.Args[1:]...) // "up --detach ...": the child sees $LAB_UP_CHILD and stays
	cmd.Dir = opts.RepoRoot
	cmd.Env = append(os.Environ(), envUpChild+"=1")
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	host.Progress(opts.Out, "starting in the background (pid %d, log %s)", cmd.Process.Pid, logPath)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	// Show the child's progress while waiting.
	var shown int64
	show := func() {
		f, err := os.Open(logPath)
		if err != nil {
			return
		}
		defer f.Close()
		if _, err := f.Seek(shown, io.SeekStart); err != nil {
			return
		}
		n, _ := io.Copy(opts.Out, f)
		shown += n
	}
	for {
		select {
		case err := <-exited:
			show()
			return fmt.Errorf("lab: the background lab exited (%v); log: %s", err, logPath) //nolint:errorlint // cmd.Wait's result, nil after a clean exit: reported, not wrapped
		case <-ctx.Done():
			_ = syscall.Kill(cmd.Process.Pid, syscall.SIGTERM)
			_ = <-exited // the cancellation is what to report
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
			show()
			if st, err := readState(upState); err == nil && st.Pid == cmd.Process.Pid {
				time.Sleep(200 * time.Millisecond)
				show()
				_ = cmd.Process.Release()
				return nil
			}
		}
	}
}

// Down stops the lab Up started (SIGTERM to its owner, then SIGKILL to whatever is left).
func Down(ctx context.Context, opts Options) error {
	if err := opts.defaults(); err != nil {
		return err
	}
	st, err := ReadState(opts)
	if err != nil {
		host.Progress(opts.Out, "no lab is running")
		return nil
	}
	if alive(st.Pid) {
		host.Progress(opts.Out, "stopping the lab (pid %d)", st.Pid)
		_ = syscall.Kill(st.Pid, syscall.SIGTERM)
		deadline := time.Now().Add(30 * time.Second)
		for alive(st.Pid) && time.Now().Before(deadline) && ctx.Err() == nil {
			time.Sleep(100 * time.Millisecond)
		}
		if alive(st.Pid) {
			_ = syscall.Kill(st.Pid, syscall.SIGKILL)
		}
	}
	for _, p := range st.Procs {
		if alive(p.Pid) && procExe(p.Pid) == p.Exe {
			host.Progress(opts.Out, "killing leftover %s (pid %d)", p.Name, p.Pid)
			_ = syscall.Kill(-p.Pid, syscall.SIGKILL)
			_ = syscall.Kill(p.Pid, syscall.SIGKILL)
		}
	}
	_ = os.Remove(statePath(opts))
	host.Progress(opts.Out, "lab stopped; logs kept in %s", st.RunDir)
	return nil
}

// procExe is the executable of a running process ("" if unknown).
func procExe(pid int) string {
	p, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
	if err != nil {
		return ""
	}
	return p
}

// Attach returns a handle on the lab Up started, for Exec, Client and the Driver methods. Its Stop does
// nothing: use Down.
func Attach(opts Options) (*Lab, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	st, err := ReadState(opts)
	if err != nil {
		return nil, err
	}
	if !alive(st.Pid) {
		return nil, fmt.Errorf("lab: the lab's process %d is gone (stale %s); run `go run ./test/lab/cmd/lab down`", st.Pid, statePath(opts))
	}
	cfg, err := loadConfig(st.Kubeconfig)
	if err != nil {
		return nil, err
	}
	c, err := newClient(cfg)
	if err != nil {
		return nil, err
	}
	return &Lab{opts: opts, runDir: st.RunDir, shareDir: st.ShareDir, logDir: filepath.Join(st.RunDir, "logs"),
		hostKubeconfig: st.Kubeconfig, cfg: cfg, client: c, labdURL: st.LabdURL, httpc: &http.Client{}, attached: true}, nil
}

// Status prints the state of the lab Up started and checks labd and the Nodes.
func Status(ctx context.Context, opts Options) error {
	if err := opts.defaults(); err != nil {
		return err
	}
	w := opts.Out
	st, err := ReadState(opts)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "lab: pid %d (alive: %v), started %s\n  run dir:    %s\n  kubeconfig: %s\n  labd:       %s\n  start:      %s\n",
		st.Pid, alive(st.Pid), st.Started.Format(time.RFC3339), st.RunDir, st.Kubeconfig, st.LabdURL, st.Timings)
	for _, p := range st.Procs {
		fmt.Fprintf(w, "  %-24s pid %-7d alive: %v\n", p.Name, p.Pid, alive(p.Pid) && procExe(p.Pid) == p.Exe)
	}
	l, err := Attach(opts)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := l.ping(cctx); err != nil {
		fmt.Fprintf(w, "  labd:       DOWN (%v)\n", err)
	} else {
		fmt.Fprintf(w, "  labd:       ok\n")
	}
	var nodes corev1.NodeList
	if err := l.client.List(cctx, &nodes); err != nil {
		return fmt.Errorf("lab: listing nodes: %w", err)
	}
	for _, n := range nodes.Items {
		ready := "NotReady"
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				ready = "Ready"
			}
		}
		fmt.Fprintf(w, "  node %-8s %s\n", n.Name, ready)
	}
	return nil
}
