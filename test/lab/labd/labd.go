// Package labd is the lab VM's exec daemon: an HTTP server in the guest's root network namespace that
// runs commands in any of the guest's network namespaces (the nodes, the outside host, the pods), so that
// tests on the host can drive the data path. It is started by the guest init as `labvm labd --listen
// 10.0.2.15:7000` and reached from the host through qemu's host forward.
//
// Endpoints (JSON in, JSON out):
//
//	GET  /healthz   "ok"
//	POST /exec      ExecRequest -> ExecResponse; Background starts the process and returns its pid
//	POST /kill      KillRequest -> {} (signals the process group of a background process)
//	POST /wait      WaitRequest -> WaitResponse (waits for a background process)
//	POST /dial      DialRequest -> DialResponse (a TCP connect from a network namespace)
//	POST /poweroff  powers the VM off (asks PID 1, the guest init, to shut down)
//	CONNECT host:port  an HTTP CONNECT tunnel to host:port, dialled from the guest's root network namespace
//	                   (which routes to the nodes and every node's pods): how the host's kube-apiserver
//	                   reaches pods (see ConnectProxy and the lab's egress selector)
package labd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ExecRequest runs Argv in network namespace Netns ("" is the guest's root namespace; otherwise a name
// under /run/netns: node-a, node-b, outside, pod-<namespace>-<name>).
type ExecRequest struct {
	Netns string   `json:"netns"`
	Argv  []string `json:"argv"`
	// TimeoutSeconds kills the process group after this long (default 60; foreground only).
	TimeoutSeconds float64 `json:"timeoutSeconds,omitempty"`
	// Background starts the process and returns its pid at once; see /kill and /wait.
	Background bool `json:"background,omitempty"`
	// Stdin is written to the process's standard input.
	Stdin string `json:"stdin,omitempty"`
	// Combined sends stderr into Stdout, interleaved as written.
	Combined bool `json:"combined,omitempty"`
	// Env is added to the daemon's environment (NAME=value).
	Env []string `json:"env,omitempty"`
	// Dir is the working directory (default /).
	Dir string `json:"dir,omitempty"`
	// LogFile receives a background process's output (appended); default: discarded.
	LogFile string `json:"logFile,omitempty"`
}

// ExecResponse is the outcome of an ExecRequest.
type ExecResponse struct {
	// ExitCode is the process's exit status; -1 when it was killed by a signal or could not start.
	ExitCode int    `json:"exitCode"`
	Stdout   string `json:"stdout"`
	Stderr   string `json:"stderr"`
	// Pid is the process id of a background process.
	Pid int `json:"pid,omitempty"`
	// TimedOut is true when the process was killed at its timeout.
	TimedOut bool `json:"timedOut,omitempty"`
	// Error explains why the process could not be started (or was killed).
	Error string `json:"error,omitempty"`
}

// KillRequest signals a background process's process group (default SIGKILL).
type KillRequest struct {
	Pid    int `json:"pid"`
	Signal int `json:"signal,omitempty"`
}

// WaitRequest waits for a background process to end, at most TimeoutSeconds (default 0: just look).
type WaitRequest struct {
	Pid            int     `json:"pid"`
	TimeoutSeconds float64 `json:"timeoutSeconds,omitempty"`
}

// WaitResponse tells whether a background process is still running, and its exit code if not.
type WaitResponse struct {
	Running  bool   `json:"running"`
	ExitCode int    `json:"exitCode"`
	Error    string `json:"error,omitempty"`
}

// DialRequest opens (and closes) a TCP connection to Address from network namespace Netns.
type DialRequest struct {
	Netns   string `json:"netns"`
	Address string `json:"address"` // host:port
	// TimeoutSeconds bounds the connect (default 5).
	TimeoutSeconds float64 `json:"timeoutSeconds,omitempty"`
}

// DialResponse tells whether the connection was established.
type DialResponse struct {
	Connected bool    `json:"connected"`
	Error     string  `json:"error,omitempty"`
	Seconds   float64 `json:"seconds"`
}

// DefaultPath is the PATH of the processes labd starts: iproute2's ip, ipvsadm and nft before busybox.
const DefaultPath = "/usr/sbin:/usr/bin:/sbin:/bin"

const maxOutput = 16 << 20

// Serve runs the daemon on addr until ctx ends.
func Serve(ctx context.Context, addr string) error {
	var ln net.Listener
	var err error
	// The address may appear a moment after we start: retry for a while.
	for i := 0; i < 100; i++ {
		ln, err = net.Listen("tcp", addr)
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err != nil {
		return err
	}
	d := NewDaemon()
	srv := &http.Server{Handler: d, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	fmt.Fprintf(os.Stderr, "labd: listening on %s\n", addr)
	err = srv.Serve(ln)
	d.killAll()
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Daemon is labd's HTTP handler.
type Daemon struct {
	mux     *http.ServeMux
	connect ConnectProxy
	mu      sync.Mutex
	bg      map[int]*bgProc
	// PowerOff is called by /poweroff (default: signal PID 1, then reboot(2) if it does not act).
	PowerOff func()
}

type bgProc struct {
	cmd  *exec.Cmd
	done chan struct{}
	code int
	err  error
}

// NewDaemon returns the handler Serve uses.
func NewDaemon() *Daemon {
	d := &Daemon{mux: http.NewServeMux(), bg: map[int]*bgProc{}, PowerOff: powerOff}
	d.connect = ConnectProxy{Dial: func(ctx context.Context, address string) (net.Conn, error) {
		var dialer net.Dialer
		return dialer.DialContext(ctx, "tcp", address)
	}}
	d.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	d.mux.HandleFunc("POST /exec", d.handleExec)
	d.mux.HandleFunc("POST /kill", d.handleKill)
	d.mux.HandleFunc("POST /wait", d.handleWait)
	d.mux.HandleFunc("POST /dial", handleDial)
	d.mux.HandleFunc("POST /poweroff", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "powering off"})
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		go func() {
			time.Sleep(100 * time.Millisecond)
			d.PowerOff()
		}()
	})
	return d
}

func (d *Daemon) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// A CONNECT request names no path (its target is host:port): the mux would not route it.
	if r.Method == http.MethodConnect {
		d.connect.ServeHTTP(w, r)
		return
	}
	d.mux.ServeHTTP(w, r)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<20)).Decode(v); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "bad request: " + err.Error()})
		return false
	}
	return true
}

// limitedBuffer keeps at most max bytes.
type limitedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	max int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := b.max - b.buf.Len(); room > 0 {
		if len(p) > room {
			b.buf.Write(p[:room])
		} else {
			b.buf.Write(p)
		}
	}
	return len(p), nil
}

func (b *limitedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (d *Daemon) handleExec(w http.ResponseWriter, r *http.Request) {
	var req ExecRequest
	if !readJSON(w, r, &req) {
		return
	}
	if len(req.Argv) == 0 {
		writeJSON(w, http.StatusBadRequest, ExecResponse{ExitCode: -1, Error: "empty argv"})
		return
	}
	if req.Background {
		writeJSON(w, http.StatusOK, d.startBackground(req))
		return
	}
	writeJSON(w, http.StatusOK, runForeground(r.Context(), req))
}

func command(req ExecRequest) *exec.Cmd {
	cmd := exec.Command(req.Argv[0], req.Argv[1:]...)
	if !strings.Contains(req.Argv[0], "/") {
		// exec.Command resolved the name with labd's own PATH; use the fixed one.
		if p, err := lookPath(req.Argv[0]); err == nil {
			cmd.Path = p
			cmd.Err = nil
		}
	}
	cmd.Env = append(append(os.Environ(), "PATH="+DefaultPath), req.Env...)
	cmd.Dir = req.Dir
	if cmd.Dir == "" {
		cmd.Dir = "/"
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

func lookPath(name string) (string, error) {
	for _, dir := range filepath.SplitList(DefaultPath) {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: not found in %s", name, DefaultPath)
}

func runForeground(ctx context.Context, req ExecRequest) ExecResponse {
	timeout := time.Duration(req.TimeoutSeconds * float64(time.Second))
	if timeout <= 0 {
		timeout = 60 * time.Second
	}
	cmd := command(req)
	stdout := &limitedBuffer{max: maxOutput}
	stderr := &limitedBuffer{max: maxOutput}
	cmd.Stdout = stdout
	cmd.Stderr = stderr
	if req.Combined {
		cmd.Stderr = stdout
	}
	if req.Stdin != "" {
		cmd.Stdin = strings.NewReader(req.Stdin)
	}
	// Background children that keep the pipes open must not hold the reply forever.
	cmd.WaitDelay = 2 * time.Second
	if err := startIn(req.Netns, cmd); err != nil {
		return ExecResponse{ExitCode: -1, Error: err.Error()}
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var timedOut bool
	var err error
	select {
	case err = <-done:
	case <-time.After(timeout):
		timedOut = true
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		err = <-done
	case <-ctx.Done():
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		err = <-done
	}
	resp := ExecResponse{ExitCode: exitCode(cmd), Stdout: stdout.String(), Stderr: stderr.String(), TimedOut: timedOut}
	if timedOut {
		resp.Error = fmt.Sprintf("timed out after %s", timeout)
	} else if err != nil && resp.ExitCode < 0 {
		resp.Error = err.Error()
	}
	return resp
}

func exitCode(cmd *exec.Cmd) int {
	if cmd.ProcessState == nil {
		return -1
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return -1
	}
	return cmd.ProcessState.ExitCode()
}

func (d *Daemon) startBackground(req ExecRequest) ExecResponse {
	cmd := command(req)
	if req.LogFile != "" {
		if err := os.MkdirAll(filepath.Dir(req.LogFile), 0o755); err != nil {
			return ExecResponse{ExitCode: -1, Error: err.Error()}
		}
		f, err := os.OpenFile(req.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return ExecResponse{ExitCode: -1, Error: err.Error()}
		}
		defer f.Close() // the child has its own copy
		cmd.Stdout = f
		cmd.Stderr = f
	}
	if req.Stdin != "" {
		cmd.Stdin = strings.NewReader(req.Stdin)
	}
	if err := startIn(req.Netns, cmd); err != nil {
		return ExecResponse{ExitCode: -1, Error: err.Error()}
	}
	p := &bgProc{cmd: cmd, done: make(chan struct{})}
	d.mu.Lock()
	d.bg[cmd.Process.Pid] = p
	d.mu.Unlock()
	go func() {
		p.err = cmd.Wait()
		p.code = exitCode(cmd)
		close(p.done)
	}()
	return ExecResponse{Pid: cmd.Process.Pid}
}

func (d *Daemon) handleKill(w http.ResponseWriter, r *http.Request) {
	var req KillRequest
	if !readJSON(w, r, &req) {
		return
	}
	if req.Pid <= 1 {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "bad pid"})
		return
	}
	sig := syscall.Signal(req.Signal)
	if req.Signal == 0 {
		sig = syscall.SIGKILL
	}
	d.mu.Lock()
	_, known := d.bg[req.Pid]
	d.mu.Unlock()
	var err error
	if known {
		err = syscall.Kill(-req.Pid, sig) // the whole process group
	} else {
		err = syscall.Kill(req.Pid, sig)
	}
	if err != nil && !errors.Is(err, syscall.ESRCH) {
		writeJSON(w, http.StatusOK, map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{})
}

func (d *Daemon) handleWait(w http.ResponseWriter, r *http.Request) {
	var req WaitRequest
	if !readJSON(w, r, &req) {
		return
	}
	d.mu.Lock()
	p, ok := d.bg[req.Pid]
	d.mu.Unlock()
	if !ok {
		writeJSON(w, http.StatusNotFound, WaitResponse{ExitCode: -1, Error: "no such background process"})
		return
	}
	timeout := time.Duration(req.TimeoutSeconds * float64(time.Second))
	select {
	case <-p.done:
	case <-time.After(timeout):
	case <-r.Context().Done():
	}
	select {
	case <-p.done:
		resp := WaitResponse{ExitCode: p.code}
		if p.err != nil && p.code < 0 {
			resp.Error = p.err.Error()
		}
		writeJSON(w, http.StatusOK, resp)
	default:
		writeJSON(w, http.StatusOK, WaitResponse{Running: true})
	}
}

func handleDial(w http.ResponseWriter, r *http.Request) {
	var req DialRequest
	if !readJSON(w, r, &req) {
		return
	}
	timeout := time.Duration(req.TimeoutSeconds * float64(time.Second))
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	t0 := time.Now()
	err := dialIn(r.Context(), req.Netns, req.Address, timeout)
	resp := DialResponse{Connected: err == nil, Seconds: time.Since(t0).Seconds()}
	if err != nil {
		resp.Error = err.Error()
	}
	writeJSON(w, http.StatusOK, resp)
}

// dialIn connects from a network namespace: the socket is created by a goroutine locked to a thread
// that switched into the namespace, and keeps that namespace.
func dialIn(ctx context.Context, netns, address string, timeout time.Duration) error {
	return inNetns(netns, func() error {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", address)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

func (d *Daemon) killAll() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for pid, p := range d.bg {
		select {
		case <-p.done:
		default:
			_ = syscall.Kill(-pid, syscall.SIGKILL)
		}
	}
}

// startIn starts cmd inside the named network namespace: the forked child inherits the namespace of the
// OS thread that forks it.
func startIn(netns string, cmd *exec.Cmd) error {
	return inNetns(netns, cmd.Start)
}

// inNetns runs f in a new goroutine on a locked OS thread switched into the named network namespace
// ("" = labd's own), and switches the thread back afterwards. Should that fail, the thread stays locked
// and ends with the goroutine, so nothing else ever runs in the wrong namespace.
func inNetns(netns string, f func() error) error {
	if netns == "" {
		return f()
	}
	if strings.ContainsAny(netns, "/") || netns == "." || netns == ".." {
		return fmt.Errorf("bad netns name %q", netns)
	}
	errc := make(chan error, 1)
	go func() { errc <- inNetnsLocked(netns, f) }()
	return <-errc
}

func inNetnsLocked(netns string, f func() error) error {
	target, err := unix.Open(filepath.Join("/run/netns", netns), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("netns %s: %w", netns, err)
	}
	defer unix.Close(target)
	runtime.LockOSThread()
	self, err := unix.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer unix.Close(self)
	if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("setns %s: %w", netns, err)
	}
	ferr := f()
	if err := unix.Setns(self, unix.CLONE_NEWNET); err != nil {
		return errors.Join(ferr, fmt.Errorf("restoring the network namespace: %w", err))
	}
	runtime.UnlockOSThread()
	return ferr
}

// powerOff asks the guest init (PID 1) to shut down, and powers off directly if it does not.
func powerOff() {
	if os.Getpid() != 1 {
		_ = syscall.Kill(1, syscall.SIGUSR1)
		time.Sleep(5 * time.Second)
	}
	unix.Sync()
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
}
