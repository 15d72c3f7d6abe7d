// Package vm boots the lab's qemu (TCG) VM with the guest kernel and initramfs, forwards the host's API
// server, labd and the kubelets' API ports, and reads the markers the guest's init prints on the console.
package vm

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ipvs-operator/ipvs-operator/test/lab/host"
	"github.com/ipvs-operator/ipvs-operator/test/lab/topology"
)

// Config is how to boot the lab VM.
type Config struct {
	Qemu      string
	Vmlinux   string
	Initramfs string
	Share     string
	MemoryMiB int
	CPUs      int
	APIPort   int // the host's kube-apiserver on 127.0.0.1
	LabdPort  int // host port forwarded to topology.GuestIP:topology.LabdPort
	// kubeletPorts are host ports forwarded to topology.GuestIP:topology.GuestKubeletPort+i, node i's kubelet API.
	KubeletPorts []int
	Console      string
	ExtraArgs    []string
	AppendCmd    string
}

// VM is a running qemu with its serial console captured to a log file.
type VM struct {
	Proc    *host.Proc
	console string
	start   time.Time

	mu      sync.Mutex
	markers map[string]time.Time
	fatal   string
	changed chan struct{}
}

// Console is the file the guest's serial console is written to.
func (v *VM) Console() string { return v.console }

func (c Config) argv() []string {
	fwd := func(port int) string {
		return fmt.Sprintf("guestfwd=tcp:%s:%d-cmd:socat - TCP:127.0.0.1:%d", topology.GuestAPIServerHost, port, c.APIPort)
	}
	netdev := []string{"user", "id=n0", "restrict=on",
		// 6443 for the guest kubeconfig, and the real port too: the kubernetes Service's endpoint is
		// 10.0.2.100:<apiPort> (the API server advertises that), which pods reach through their node.
		fwd(topology.GuestAPIServerPort),
		fmt.Sprintf("hostfwd=tcp:127.0.0.1:%d-%s:%d", c.LabdPort, topology.GuestIP, topology.LabdPort),
	}
	for i, p := range c.KubeletPorts {
		netdev = append(netdev, fmt.Sprintf("hostfwd=tcp:127.0.0.1:%d-%s:%d", p, topology.GuestIP, topology.GuestKubeletPort+i))
	}
	if c.APIPort != topology.GuestAPIServerPort {
		netdev = append(netdev, fwd(c.APIPort))
	}
	// tsc: hpet reads are slow MMIO exits under TCG; TCG's TSC is derived from the host clock.
	appendLine := "console=ttyS0 quiet panic=-1 oops=panic mitigations=off tsc=reliable clocksource=tsc no_timer_check " + c.AppendCmd
	return slices.Concat([]string{c.Qemu,
		"-accel", "tcg,thread=multi", "-cpu", "qemu64",
		"-smp", strconv.Itoa(c.CPUs), "-m", strconv.Itoa(c.MemoryMiB),
		"-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot",
		"-kernel", c.Vmlinux, "-initrd", c.Initramfs, "-append", strings.TrimSpace(appendLine),
		"-netdev", strings.Join(netdev, ","),
		"-device", "virtio-net-pci,netdev=n0,romfile=",
		"-virtfs", "local,path=" + c.Share + ",mount_tag=host0,security_model=none,id=host0",
	}, c.ExtraArgs)
}

// Start boots the VM; its console goes to c.Console.
func Start(c Config) (*VM, error) {
	v := &VM{console: c.Console, markers: map[string]time.Time{}, changed: make(chan struct{})}
	cf, err := os.OpenFile(c.Console, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	argv := c.argv()
	fmt.Fprintf(cf, "# %s\n", strings.Join(argv, " "))
	pr, pw, err := os.Pipe()
	if err != nil {
		cf.Close()
		return nil, err
	}
	v.start = time.Now()
	v.Proc, err = host.Start("qemu", filepath.Join(filepath.Dir(c.Console), "qemu.log"), argv, func(cmd *exec.Cmd) {
		cmd.Stdout = pw
		cmd.Stdin = nil // /dev/null: the guest never reads the console
	})
	pw.Close()
	if err != nil {
		pr.Close()
		cf.Close()
		return nil, err
	}
	go v.readConsole(pr, cf)
	return v, nil
}

// readConsole timestamps console lines into the log and records LAB-* markers.
func (v *VM) readConsole(r io.ReadCloser, logf *os.File) {
	defer r.Close()
	defer logf.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		d := time.Since(v.start)
		fmt.Fprintf(logf, "[%7.3f] %s\n", d.Seconds(), line)
		if i := strings.Index(line, "LAB-"); i >= 0 {
			f := strings.Fields(line[i:])
			v.mu.Lock()
			if _, seen := v.markers[f[0]]; !seen {
				v.markers[f[0]] = time.Now()
			}
			if f[0] == "LAB-FATAL" {
				v.fatal = line[i:]
			}
			close(v.changed)
			v.changed = make(chan struct{})
			v.mu.Unlock()
		} else if strings.Contains(line, "Kernel panic") {
			v.mu.Lock()
			v.fatal = line
			v.mu.Unlock()
		}
	}
}

// WaitMarker waits until the console showed marker, qemu exited, the guest failed or timeout.
func (v *VM) WaitMarker(marker string, timeout time.Duration) (time.Duration, error) {
	deadline := time.After(timeout)
	for {
		v.mu.Lock()
		t, ok := v.markers[marker]
		fatal := v.fatal
		ch := v.changed
		v.mu.Unlock()
		if ok {
			return t.Sub(v.start), nil
		}
		if fatal != "" {
			return 0, fmt.Errorf("lab: the VM failed: %s; console: %s\n%s", fatal, v.console, host.LogTail(v.console, 40))
		}
		select {
		case <-ch:
		case <-v.Proc.Done():
			time.Sleep(100 * time.Millisecond)                                                                       // let the console reader finish
			return 0, fmt.Errorf("lab: qemu exited (%v) before %s; console: %s\n%s\nqemu: %s", v.Proc.Err(), marker, //nolint:errorlint // cmd.Wait's result, nil after a clean exit: reported, not wrapped
				v.console, host.LogTail(v.console, 40), host.LogTail(v.Proc.Log(), 10))
		case <-deadline:
			return 0, fmt.Errorf("lab: no %s on the VM console after %s; console: %s\n%s", marker, timeout, v.console,
				host.LogTail(v.console, 40))
		case <-time.After(time.Second):
		}
	}
}

// Stop waits up to grace for qemu to end (the guest powers off when labd is told to), then stops it.
func (v *VM) Stop(grace time.Duration) error {
	if v == nil || v.Proc == nil {
		return nil
	}
	select {
	case <-v.Proc.Done():
	case <-time.After(grace):
	}
	return v.Proc.Stop(2 * time.Second)
}
