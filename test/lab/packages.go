package lab

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"

	"github.com/ipvs-operator/ipvs-operator/test/lab/guest"
	"github.com/ipvs-operator/ipvs-operator/test/lab/host"
)

// hostTool is a program the lab needs on the host and the Debian package that ships it.
type hostTool struct {
	pkg   string
	check func() bool
}

func onPath(name string) func() bool {
	return func() bool { _, err := exec.LookPath(name); return err == nil }
}

func anyFile(paths ...string) func() bool {
	return func() bool {
		for _, p := range paths {
			if host.Exists(p) {
				return true
			}
		}
		return false
	}
}

// hostTools lists every host program the lab uses. conntrack is optional in the guest but cheap.
var hostTools = []hostTool{
	{"qemu-system-x86", onPath("qemu-system-x86_64")},
	{"busybox-static", guest.StaticBusybox},
	{"ipvsadm", anyFile("/usr/sbin/ipvsadm", "/sbin/ipvsadm")},
	{"cpio", onPath("cpio")},
	{"kmod", anyFile("/usr/sbin/depmod", "/sbin/depmod")},
	{"socat", onPath("socat")},
	{"nftables", anyFile("/usr/sbin/nft", "/sbin/nft")},
	{"file", onPath("file")},
	{"iproute2", anyFile("/usr/sbin/ip", "/sbin/ip", "/bin/ip")},
	{"xz-utils", onPath("xz")},
	{"conntrack", anyFile("/usr/sbin/conntrack", "/sbin/conntrack")},
	// kube-proxy's iptables and ipvs modes in the guest (the migration specs and the scale harness)
	{"iptables", anyFile("/usr/sbin/xtables-nft-multi", "/sbin/xtables-nft-multi")},
	{"ipset", anyFile("/usr/sbin/ipset", "/sbin/ipset")},
	// curl in pods: `kubectl exec POD -- curl -s http://SERVICE`, as the Kubernetes tutorials type it.
	{"curl", anyFile("/usr/bin/curl")},
	// A netcat with -v/-t/-u in pods: upstream's Service e2e specs probe with `nc -v -t -w 2 HOST PORT` (as in
	// their agnhost image); busybox's nc has none of these flags.
	{"netcat-openbsd", anyFile("/bin/nc.openbsd", "/usr/bin/nc.openbsd")},
	// Pods' /bin/sh and wget (guest.userland says why not busybox's).
	{"dash", anyFile("/usr/bin/dash", "/bin/dash")},
	{"wget", anyFile("/usr/bin/wget")},
}

// EnsurePackages installs the Debian packages the lab needs that are missing (apt-get, as root).
func EnsurePackages(ctx context.Context, out io.Writer) error {
	var missing []string
	for _, t := range hostTools {
		if !t.check() {
			missing = append(missing, t.pkg)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("lab: missing Debian packages %s (run as root, or: apt-get install %s)",
			strings.Join(missing, " "), strings.Join(missing, " "))
	}
	host.Progress(out, "installing Debian packages: %s", strings.Join(missing, " "))
	if err := host.RunAPT(ctx, out, "update", "-qq"); err != nil {
		return err
	}
	args := append([]string{"install", "-y", "-qq", "--no-install-recommends"}, missing...)
	if err := host.RunAPT(ctx, out, args...); err != nil {
		return err
	}
	for _, t := range hostTools {
		if !t.check() {
			return fmt.Errorf("lab: package %s installed but its program is still missing", t.pkg)
		}
	}
	return nil
}
