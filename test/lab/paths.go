// Package lab runs a real two-node Kubernetes cluster whose nodes live in a qemu (TCG) VM with Debian's
// kernel, so that the agent programs real kernel IPVS even on a machine whose own kernel has none.
//
// The host runs the control plane on 127.0.0.1 (package controlplane, with package pki's certificates).
// The VM (package vm, booting package guest's kernel and initramfs) runs the guest exec daemon (labd) and
// one lab kubelet per node, each node a network namespace; package topology holds every address, and the
// guest's init builds the network from it. Package host runs and watches the host's processes.
//
// Every node netns has ip_forward=1, br_netfilter with bridge-nf-call-iptables=1 and vs.conntrack=1; the
// root netns masquerades the node and pod networks out of eth0 (where only the host answers) and refuses
// labd's port from the node network. The kube-apiserver advertises topology.GuestAPIServerHost with its
// real port, so the kubernetes Service's endpoint is that address and port; qemu forwards it as well as
// topology.GuestAPIServerPort.
//
// Binaries built for the guest (CGO_ENABLED=0: labvm, agent, operator) are in the share at /mnt/host/bin;
// guest logs go to /mnt/host/logs (labd.out, kubelet-node-X.log, kubelet-node-X.out).
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
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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

// errorsJoin joins non-nil errors.
func errorsJoin(errs ...error) error { return errors.Join(errs...) }
