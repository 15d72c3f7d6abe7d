package kubelet

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
)

// capabilityNumbers are the Linux capabilities by the names a securityContext uses (capabilities(7)).
var capabilityNumbers = map[string]int{
	"CHOWN": 0, "DAC_OVERRIDE": 1, "DAC_READ_SEARCH": 2, "FOWNER": 3, "FSETID": 4, "KILL": 5, "SETGID": 6,
	"SETUID": 7, "SETPCAP": 8, "LINUX_IMMUTABLE": 9, "NET_BIND_SERVICE": 10, "NET_BROADCAST": 11,
	"NET_ADMIN": 12, "NET_RAW": 13, "IPC_LOCK": 14, "IPC_OWNER": 15, "SYS_MODULE": 16, "SYS_RAWIO": 17,
	"SYS_CHROOT": 18, "SYS_PTRACE": 19, "SYS_PACCT": 20, "SYS_ADMIN": 21, "SYS_BOOT": 22, "SYS_NICE": 23,
	"SYS_RESOURCE": 24, "SYS_TIME": 25, "SYS_TTY_CONFIG": 26, "MKNOD": 27, "LEASE": 28, "AUDIT_WRITE": 29,
	"AUDIT_CONTROL": 30, "SETFCAP": 31, "MAC_OVERRIDE": 32, "MAC_ADMIN": 33, "SYSLOG": 34, "WAKE_ALARM": 35,
	"BLOCK_SUSPEND": 36, "AUDIT_READ": 37, "PERFMON": 38, "BPF": 39, "CHECKPOINT_RESTORE": 40,
}

// runtimeDefaultCapabilities are what containerd and CRI-O grant a container that neither adds nor drops any.
var runtimeDefaultCapabilities = []string{"CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID",
	"SETUID", "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE"}

// containerSecurity is what the lab enforces of a container's securityContext, as a container runtime would:
// its capability set (bounding, permitted, effective and inheritable; ambient cleared), no_new_privs for
// allowPrivilegeEscalation: false, and a read-only root for readOnlyRootFilesystem. Seccomp profiles and user
// IDs are not enforced: lab processes run as root.
type containerSecurity struct {
	// Privileged keeps everything: no wrapping at all.
	Privileged   bool
	Capabilities []string // sorted names, without CAP_
	NoNewPrivs   bool
	ReadOnlyRoot bool
	// Hostname, when set, gives the process a UTS namespace of its own with this hostname (privileged too).
	Hostname string
}

// securityFor resolves a container's securityContext the way the kubelet and the runtime do: the runtime's
// default capabilities, less Drop ("ALL" drops every one), plus Add.
func securityFor(sc *corev1.SecurityContext) containerSecurity {
	if sc != nil && sc.Privileged != nil && *sc.Privileged {
		return containerSecurity{Privileged: true}
	}
	caps := slices.Clone(runtimeDefaultCapabilities)
	s := containerSecurity{}
	if sc != nil {
		if sc.Capabilities != nil {
			for _, d := range sc.Capabilities.Drop {
				name := strings.TrimPrefix(strings.ToUpper(string(d)), "CAP_")
				if name == "ALL" {
					caps = nil
					continue
				}
				caps = slices.DeleteFunc(caps, func(c string) bool { return c == name })
			}
			for _, a := range sc.Capabilities.Add {
				name := strings.TrimPrefix(strings.ToUpper(string(a)), "CAP_")
				if name == "ALL" {
					for n := range capabilityNumbers {
						caps = append(caps, n)
					}
					continue
				}
				caps = append(caps, name)
			}
		}
		s.NoNewPrivs = sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation
		s.ReadOnlyRoot = sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem
	}
	slices.Sort(caps)
	s.Capabilities = slices.Compact(caps)
	return s
}

// args are containerSecurity as `labvm container` flags.
func (s containerSecurity) args() []string {
	var out []string
	if s.Hostname != "" {
		out = append(out, "--hostname="+s.Hostname)
	}
	if s.Privileged {
		return out
	}
	out = append(out, "--caps="+strings.Join(s.Capabilities, ","))
	if s.NoNewPrivs {
		out = append(out, "--no-new-privs")
	}
	if s.ReadOnlyRoot {
		out = append(out, "--read-only-root")
	}
	return out
}

// restrictCapabilities leaves this thread (which then execs) with exactly keep: every other capability
// leaves the bounding set, ambient is cleared, and permitted, effective and inheritable become keep. After
// execve a root process gets permitted = inheritable | bounding = keep, as in a container.
// Equivalent to: `capsh --caps=... --drop=...`.
func restrictCapabilities(keep []string) error {
	var mask [2]uint32
	for _, name := range keep {
		n, ok := capabilityNumbers[name]
		if !ok {
			return fmt.Errorf("unknown capability %q", name)
		}
		mask[n/32] |= 1 << (n % 32)
	}
	last := 40
	if b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			last = n
		}
	}
	runtime.LockOSThread() // capabilities are per thread; exec happens on this one
	for n := 0; n <= last; n++ {
		if mask[n/32]&(1<<(n%32)) != 0 {
			continue
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(n), 0, 0, 0); err != nil {
			return fmt.Errorf("dropping capability %d from the bounding set: %w", n, err)
		}
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return fmt.Errorf("clearing ambient capabilities: %w", err)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	data := [2]unix.CapUserData{
		{Effective: mask[0], Permitted: mask[0], Inheritable: mask[0]},
		{Effective: mask[1], Permitted: mask[1], Inheritable: mask[1]},
	}
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capset: %w", err)
	}
	return nil
}
