// Package lab runs a real two-node Kubernetes cluster whose nodes live in a qemu (TCG) VM with Debian's
// kernel, so that the agent programs real kernel IPVS even on a machine whose own kernel has none.
//
// The host runs etcd, kube-apiserver, kube-controller-manager and kube-scheduler on 127.0.0.1. The VM runs
// the guest exec daemon (labd) and two lab kubelets, each in a network namespace that plays a node:
//
//	guest root netns   eth0 10.0.2.15/24 (qemu user net; 10.0.2.100:6443 is the host's kube-apiserver)
//	                   bridge lab0 192.168.100.1/24 = the node network; labd on 10.0.2.15:7000
//	netns node-a       eth0 192.168.100.11/24, pod bridge cbr0 10.244.1.1/24, route 10.244.2.0/24 via .12
//	netns node-b       eth0 192.168.100.12/24, pod bridge cbr0 10.244.2.1/24, route 10.244.1.0/24 via .11
//	netns outside      eth0 192.168.100.200/24, route 10.96.0.0/16 via 192.168.100.11 (not a cluster member)
//	netns pod-NS-NAME  one per pod, made by the lab kubelet
//
// Every node netns has ip_forward=1, br_netfilter with bridge-nf-call-iptables=1 and vs.conntrack=1; the
// root netns masquerades 192.168.100.0/24 and 10.244.0.0/16 out of eth0 (where only 10.0.2.100 answers)
// and refuses labd's port from lab0. The kube-apiserver advertises 10.0.2.100 with its real port, so the
// kubernetes Service's endpoint is 10.0.2.100:<port>; qemu forwards that port as well as 6443.
//
// The guest loads IPVS with every scheduler, conntrack, nftables (nat, masq, ct, reject, fib, limit, log,
// numgen), bridge, br_netfilter, veth, dummy (numdummies=0), xfrm_user, virtio and 9p at boot, and ships
// /lib/modules/<kver> with modules.dep and /sbin/modprobe (busybox). Binaries built for the guest
// (CGO_ENABLED=0: labvm, agent, operator) are in the share at /mnt/host/bin; guest logs go to
// /mnt/host/logs (labd.out, kubelet-node-X.log, kubelet-node-X.out).
//
// Commands run through labd switch network namespace only (setns), not mount namespace: /sys is the
// guest root's. Wrap argv in `ip netns exec NAME ...` when a tool needs the namespace's /sys.
//
// Prepare builds the cached assets (kernel, modules, initramfs, Kubernetes binaries), Start brings a lab
// up and Stop tears it down. Up and Down do the same for the `lab` command line, which can leave a lab
// running in the background:
//
//	go run ./test/lab/cmd/lab up [--detach]          # kubeconfig: bin/lab/run/kubeconfig
//	go run ./test/lab/cmd/lab exec node-a ipvsadm -Ln
//	go run ./test/lab/cmd/lab down
package lab

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// ModulePath is the Go module this lab belongs to; RepoRoot looks for its go.mod.
const ModulePath = "github.com/ipvs-operator/ipvs-operator"

// Environment variables the lab reads.
const (
	// EnvCache overrides the asset cache directory (default <repo>/bin/lab).
	EnvCache = "LAB_CACHE"
	// EnvKeep keeps a lab's run directory (logs, certificates, share) after Stop when set to 1.
	EnvKeep = "LAB_KEEP"
	// EnvKubeBin overrides the directory of the Kubernetes binaries (default <repo>/bin/k8s/<version>).
	EnvKubeBin = "LAB_KUBE_BIN"
	// EnvRunDir (LAB_RUN_DIR, in updown.go) selects the lab Attach, Status, Down and `lab exec` use.
)

// KubeVersion is the version of the control-plane binaries hack/build-kube.sh builds.
const KubeVersion = "1.37.1"

// RepoRoot finds the root of the ipvs-operator module, walking up from the working directory.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(data, []byte("module "+ModulePath+"\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("lab: no go.mod of module %s above the working directory", ModulePath)
		}
		dir = parent
	}
}

// CacheDir is where the lab's assets are kept: $LAB_CACHE, or <repo>/bin/lab.
func CacheDir(repo string) string {
	if d := os.Getenv(EnvCache); d != "" {
		abs, err := filepath.Abs(d)
		if err == nil {
			return abs
		}
		return d
	}
	return filepath.Join(repo, "bin", "lab")
}

// progress prints one "lab: ..." line.
func progress(w io.Writer, format string, args ...any) {
	if w == nil {
		return
	}
	fmt.Fprintf(w, "lab: "+format+"\n", args...)
}

// run executes a command and returns its stdout; on failure the error carries stderr.
func run(ctx context.Context, dir string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, tail(stderr.String(), 2000))
	}
	return stdout.String(), nil
}

// runStreaming executes a command whose output is shown line by line with a prefix.
func runStreaming(ctx context.Context, w io.Writer, prefix string, env []string, dir string, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	pr, pw := io.Pipe()
	cmd.Stdout = pw
	cmd.Stderr = pw
	var last bytes.Buffer
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			line := sc.Text()
			if w != nil {
				fmt.Fprintf(w, "%s%s\n", prefix, line)
			}
			last.WriteString(line + "\n")
			if last.Len() > 8192 {
				b := last.Bytes()[last.Len()-4096:]
				last.Reset()
				last.Write(b)
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	err := cmd.Run()
	pw.Close()
	<-done
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, tail(last.String(), 2000))
	}
	return nil
}

func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// writeFileAtomic writes data to path (mode 0644) through a temporary file in the same directory.
func writeFileAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil { //nolint:gosec // lab state and caches, read by the lab only
		return err
	}
	return os.Rename(tmp, path)
}

// errorsJoin joins non-nil errors.
func errorsJoin(errs ...error) error { return errors.Join(errs...) }
