// Command lab runs the ipvs-operator lab: a Kubernetes control plane on this machine and two nodes in a
// qemu VM with a real IPVS-capable kernel (see package test/lab).
//
//	go run ./test/lab/cmd/lab prepare             build the cached assets (kernel, initramfs, Kubernetes)
//	go run ./test/lab/cmd/lab up [--detach]       start a lab; stays in the foreground until Ctrl-C
//	go run ./test/lab/cmd/lab status              show the running lab
//	go run ./test/lab/cmd/lab exec NETNS CMD...   run CMD in the VM (NETNS: root, node-a, node-b, outside,
//	                                             pod-<namespace>-<name>)
//	go run ./test/lab/cmd/lab down                stop a lab started with --detach
//
// Environment: LAB_CACHE (asset cache, default <repo>/bin/lab), LAB_KUBE_BIN (Kubernetes binaries),
// LAB_KEEP=1 (keep run directories), LAB_RUN_DIR (status/exec/down act on the lab of this run directory,
// e.g. one a test suite or the demo started, instead of the one "up" started).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/ipvs-operator/ipvs-operator/test/lab"
	"github.com/ipvs-operator/ipvs-operator/test/lab/labd"
)

const usage = `usage: lab <command> [flags]

commands:
  prepare                    build the cached assets (kernel, initramfs, Kubernetes binaries)
  up [--detach] [--no-kubelets] [--bare]
                             start a lab in <cache>/run and keep it until Ctrl-C; with --detach, return
                             once it is ready and leave it running for "lab down". Ready means CoreDNS
                             and the operator (from config/, agents in scope all) are ready too, unless
                             --bare
  down                       stop the lab started by "lab up --detach"
  status                     show the running lab, labd and the Nodes
  exec [--timeout D] NETNS CMD [ARG...]
                             run CMD in the VM, in network namespace NETNS: root, node-a, node-b,
                             outside or pod-<namespace>-<name>; exits with CMD's exit code

status, exec and down act on the lab "up" started, or on the lab whose run directory is $LAB_RUN_DIR.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	ctx := context.Background()
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "prepare":
		err = prepare(ctx, args)
	case "up":
		err = up(ctx, args)
	case "down":
		err = lab.Down(ctx, lab.Options{})
	case "status":
		err = lab.Status(ctx, lab.Options{})
	case "exec":
		var code int
		code, err = execCmd(ctx, args)
		if err == nil {
			os.Exit(code)
		}
	case "help", "-h", "--help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "lab: unknown command %q\n%s", cmd, usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func prepare(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("prepare", flag.ExitOnError)
	skipKube := fs.Bool("skip-kube", false, "do not build the Kubernetes binaries")
	_ = fs.Parse(args)
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	a, err := lab.Prepare(ctx, lab.Options{NoKube: *skipKube})
	if err != nil {
		return err
	}
	fmt.Printf("lab: assets ready in %s: kernel %s, initramfs %s, Kubernetes binaries %s\n",
		a.Duration.Round(10*time.Millisecond), a.Kernel.Version, a.Initramfs, a.KubeBinDir)
	return nil
}

func up(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("up", flag.ExitOnError)
	detach := fs.Bool("detach", false, "return once the lab is ready and leave it running (stop it with `lab down`)")
	noKubelets := fs.Bool("no-kubelets", false, "boot the VM without the lab kubelets")
	bare := fs.Bool("bare", false, "only the cluster: no CoreDNS, no operator")
	_ = fs.Parse(args)
	// A ready cluster by default: CoreDNS, and the operator from config/ with its agents serving every
	// ClusterIP Service (the lab runs no kube-proxy).
	full := !*noKubelets && !*bare
	return lab.Up(ctx, lab.Options{NoKubelets: *noKubelets, ClusterDNS: full, InstallOperator: full}, *detach)
}

func execCmd(ctx context.Context, args []string) (int, error) {
	fs := flag.NewFlagSet("exec", flag.ExitOnError)
	timeout := fs.Duration("timeout", lab.DefaultExecTimeout, "kill the command after this long")
	_ = fs.Parse(args)
	rest := fs.Args()
	if len(rest) < 2 {
		return 0, errors.New("usage: lab exec [--timeout D] NETNS CMD [ARG...]")
	}
	netns := rest[0]
	if netns == "root" || netns == "-" {
		netns = ""
	}
	l, err := lab.Attach(lab.Options{})
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout+10*time.Second)
	defer cancel()
	resp, err := l.Run(ctx, labd.ExecRequest{Netns: netns, Argv: rest[1:], TimeoutSeconds: timeout.Seconds()})
	if err != nil {
		return 0, err
	}
	fmt.Fprint(os.Stdout, resp.Stdout)
	fmt.Fprint(os.Stderr, resp.Stderr)
	if resp.Error != "" {
		fmt.Fprintf(os.Stderr, "lab exec: %s\n", resp.Error)
	}
	if resp.ExitCode < 0 {
		return 255, nil
	}
	return resp.ExitCode, nil
}
