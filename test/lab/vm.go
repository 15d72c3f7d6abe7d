package lab

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
)

// vmConfig is how to boot the lab VM.
type vmConfig struct {
	qemu      string
	vmlinux   string
	initramfs string
	share     string
	memoryMiB int
	cpus      int
	apiPort   int // the host's kube-apiserver on 127.0.0.1
	labdPort  int // host port forwarded to GuestIP:LabdPort
	// kubeletPorts are host ports forwarded to GuestIP:GuestKubeletPort+i, node i's kubelet API.
	kubeletPorts []int
	console      string
	extraArgs    []string
	appendCmd    string
}

// vm is a running qemu with its serial console captured to a log file.
type vm struct {
	proc    *proc
	console string
	start   time.Time

	mu      sync.Mutex
	markers map[string]time.Time
	fatal   string
	changed chan struct{}
}

func (c vmConfig) argv() []string {
	fwd := func(port int) string {
		return fmt.Sprintf("guestfwd=tcp:%s:%d-cmd:socat - TCP:127.0.0.1:%d", GuestAPIServerHost, port, c.apiPort)
	}
	netdev := []string{"user", "id=n0", "restrict=on",
		// 6443 for the guest kubeconfig, and the real port too: the kubernetes Service's endpoint is
		// 10.0.2.100:<apiPort> (the API server advertises that), which pods reach through their node.
		fwd(GuestAPIServerPort),
		fmt.Sprintf("hostfwd=tcp:127.0.0.1:%d-%s:%d", c.labdPort, GuestIP, LabdPort),
	}
	for i, p := range c.kubeletPorts {
		netdev = append(netdev, fmt.Sprintf("hostfwd=tcp:127.0.0.1:%d-%s:%d", p, GuestIP, GuestKubeletPort+i))
	}
	if c.apiPort != GuestAPIServerPort {
		netdev = append(netdev, fwd(c.apiPort))
	}
	// tsc: hpet reads are slow MMIO exits under TCG; TCG's TSC is derived from the host clock.
	appendLine := "console=ttyS0 quiet panic=-1 oops=panic mitigations=off tsc=reliable clocksource=tsc no_timer_check " + c.appendCmd
	return slices.Concat([]string{c.qemu,
		"-accel", "tcg,thread=multi", "-cpu", "qemu64",
		"-smp", strconv.Itoa(c.cpus), "-m", strconv.Itoa(c.memoryMiB),
		"-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot",
		"-kernel", c.vmlinux, "-initrd", c.initramfs, "-append", strings.TrimSpace(appendLine),
		"-netdev", strings.Join(netdev, ","),
		"-device", "virtio-net-pci,netdev=n0,romfile=",
		"-virtfs", "local,path=" + c.share + ",mount_tag=host0,security_model=none,id=host0",
	}, c.extraArgs)
}

func startVM(c vmConfig) (*vm, error) {
	v := &vm{console: c.console, markers: map[string]time.Time{}, changed: make(chan struct{})}
	cf, err := os.OpenFile(c.console, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
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
	v.proc, err = startProc("qemu", filepath.Join(filepath.Dir(c.console), "qemu.log"), argv, func(cmd *exec.Cmd) {
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
func (v *vm) readConsole(r io.ReadCloser, logf *os.File) {
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

// waitMarker waits until the console showed marker, qemu exited, the guest failed or timeout.
func (v *vm) waitMarker(marker string, timeout time.Duration) (time.Duration, error) {
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
			return 0, fmt.Errorf("lab: the VM failed: %s; console: %s\n%s", fatal, v.console, logTail(v.console, 40))
		}
		select {
		case <-ch:
		case <-v.proc.done:
			time.Sleep(100 * time.Millisecond)                                                                     // let the console reader finish
			return 0, fmt.Errorf("lab: qemu exited (%v) before %s; console: %s\n%s\nqemu: %s", v.proc.err, marker, //nolint:errorlint // cmd.Wait's result, nil after a clean exit: reported, not wrapped
				v.console, logTail(v.console, 40), logTail(v.proc.log, 10))
		case <-deadline:
			return 0, fmt.Errorf("lab: no %s on the VM console after %s; console: %s\n%s", marker, timeout, v.console,
				logTail(v.console, 40))
		case <-time.After(time.Second):
		}
	}
}

func (v *vm) stop(grace time.Duration) error {
	if v == nil || v.proc == nil {
		return nil
	}
	select {
	case <-v.proc.done:
	case <-time.After(grace):
	}
	return v.proc.stop(2 * time.Second)
}
