package kubelet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"
)

// The Kubelet's side of the kubelet API (podRuntime): exec, port-forward and logs against the pods its
// workers run.

var _ podRuntime = (*Kubelet)(nil)

// runningWorker returns the worker of a pod that runs on this node.
func (k *Kubelet) runningWorker(namespace, name string) (*podWorker, error) {
	k.mu.Lock()
	w := k.workers[types.NamespacedName{Namespace: namespace, Name: name}]
	k.mu.Unlock()
	if w == nil {
		return nil, fmt.Errorf("%w: %s", errPodNotFound, podKey(namespace, name))
	}
	return w, nil
}

// findContainer returns the pod's container (or init container) by name; "" means the only container.
func (w *podWorker) findContainer(name string) (*container, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if name == "" && len(w.containers) == 1 {
		return w.containers[0], nil
	}
	for _, cs := range [][]*container{w.containers, w.initContainers} {
		for _, c := range cs {
			if c.spec.Name == name {
				return c, nil
			}
		}
	}
	return nil, fmt.Errorf("%w: %q in pod %s", errContainerNotFound, name, w.key)
}

// PodUID implements podRuntime.
func (k *Kubelet) PodUID(namespace, name string) (types.UID, error) {
	w, err := k.runningWorker(namespace, name)
	if err != nil {
		return "", err
	}
	return w.uid, nil
}

// ContainerLog implements podRuntime.
func (k *Kubelet) ContainerLog(namespace, name, containerName string) (string, types.UID, func() bool, error) {
	w, err := k.runningWorker(namespace, name)
	if err != nil {
		return "", "", nil, err
	}
	c, err := w.findContainer(containerName)
	if err != nil {
		return "", "", nil, err
	}
	alive := func() bool {
		select {
		case <-w.done:
			return false
		default:
			return true
		}
	}
	return containerLogPath(k.cfg.PodLogDir, w.currentPod(), c.spec.Name), w.uid, alive, nil
}

// ExecInContainer implements remotecommand.Executor: the command runs as the container's process does, in
// the pod's network namespace with the container's environment (the node's filesystem: the lab has no
// images). A TTY is not emulated: the command gets pipes.
func (k *Kubelet) ExecInContainer(ctx context.Context, podName, _, containerName string, cmd []string,
	in io.Reader, out, errOut io.WriteCloser, _ bool, _ <-chan remotecommand.TerminalSize, timeout time.Duration) error {
	ns, name := splitPodKey(podName)
	w, err := k.runningWorker(ns, name)
	if err != nil {
		return err
	}
	c, err := w.findContainer(containerName)
	if err != nil {
		return err
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	spec, err := w.processSpec(ctx, c)
	if err != nil {
		return err
	}
	argv := cmd
	if !w.hostNetwork {
		argv = k.netns.ExecArgv(w.netns, argv)
	}
	k.log.V(1).Info("Exec in container", "pod", podName, "container", c.spec.Name, "argv", argv)
	return runExec(ctx, argv, spec.Env, in, out, errOut, k.cfg.KillGracePeriod)
}

// runExec runs argv with the streams of an exec request. Stdin is copied by hand, not through
// exec.Cmd.Stdin, so that a client that keeps stdin open does not hold the request after the command ended.
// A non-zero exit is returned as utilexec.ExitError, which the streaming code reports as the exit code.
func runExec(ctx context.Context, argv, env []string, in io.Reader, out, errOut io.Writer, killGrace time.Duration) error {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	cmd.Dir = "/"
	if out != nil {
		cmd.Stdout = out
	}
	if errOut != nil {
		cmd.Stderr = errOut
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	var stdin io.WriteCloser
	if in != nil {
		var err error
		if stdin, err = cmd.StdinPipe(); err != nil {
			return err
		}
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	if stdin != nil {
		go func() {
			_, _ = io.Copy(stdin, in)
			_ = stdin.Close()
		}()
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var err error
	select {
	case err = <-exited:
	case <-ctx.Done():
		pid := cmd.Process.Pid
		_ = syscall.Kill(-pid, syscall.SIGTERM)
		select {
		case err = <-exited:
		case <-time.After(killGrace):
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			err = <-exited
		}
	}
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		return utilexec.CodeExitError{Err: err, Code: exitErr.ExitCode()}
	}
	return err
}

// PortForward implements portforward.PortForwarder: like a container runtime, it connects to the port on
// the pod's loopback from inside the pod's network namespace, so a server bound to localhost is reached too.
func (k *Kubelet) PortForward(ctx context.Context, podName, _ string, port int32, stream io.ReadWriteCloser) error {
	ns, name := splitPodKey(podName)
	w, err := k.runningWorker(ns, name)
	if err != nil {
		return err
	}
	address := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port)))
	dial := func() (net.Conn, error) {
		d := net.Dialer{Timeout: 5 * time.Second}
		return d.DialContext(ctx, "tcp4", address)
	}
	var conn net.Conn
	if w.hostNetwork {
		conn, err = dial()
	} else {
		err = runInNetns(k.netns.Path(w.netns), func() error {
			var derr error
			conn, derr = dial()
			return derr
		})
	}
	if err != nil {
		return fmt.Errorf("port-forward to %s port %d: %w", podName, port, err)
	}
	return pipeStreams(conn, stream)
}

// pipeStreams copies both ways until the pod's side ends, then closes both.
func pipeStreams(conn net.Conn, stream io.ReadWriteCloser) error {
	defer conn.Close()
	defer stream.Close()
	go func() {
		_, _ = io.Copy(conn, stream)
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.CloseWrite() // the client finished sending: pass the half-close on
		}
	}()
	_, err := io.Copy(stream, conn)
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}
