package kubelet

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
)

// ContainerCommand is the labvm subcommand that runs a container's process in its own mount namespace.
const ContainerCommand = "container"

// bindMount is a volume seen by a container: Source on the node appears at Target in the container.
type bindMount struct {
	Source, Target string
	ReadOnly       bool
}

func (b bindMount) String() string {
	s := b.Source + ":" + b.Target
	if b.ReadOnly {
		s += ":ro"
	}
	return s
}

// parseBindMount parses SOURCE:TARGET[:ro].
func parseBindMount(s string) (bindMount, error) {
	parts := strings.Split(s, ":")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || !filepath.IsAbs(parts[1]) {
		return bindMount{}, fmt.Errorf("bind %q: want SOURCE:/TARGET[:ro]", s)
	}
	b := bindMount{Source: parts[0], Target: parts[1]}
	if len(parts) == 3 {
		if parts[2] != "ro" {
			return bindMount{}, fmt.Errorf("bind %q: unknown option %q", s, parts[2])
		}
		b.ReadOnly = true
	}
	return b, nil
}

// containerMounts are the binds that make a container's volume mounts appear where it expects them:
// hostPath volumes, emptyDir volumes (a per-pod directory), ConfigMap volumes (written by
// writeConfigMapVolumes) and the ServiceAccount token directory at its
// well-known path (so in-cluster configuration works too). Other volume types are reported, not mounted.
func containerMounts(pod *corev1.Pod, c *corev1.Container, podDir string, files *serviceAccountFiles) (binds []bindMount, skipped []string) {
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Spec.Volumes {
		volumes[v.Name] = v
	}
	for _, m := range c.VolumeMounts {
		v, ok := volumes[m.Name]
		switch {
		case !ok:
			skipped = append(skipped, m.Name+" (no such volume)")
		case m.SubPath != "" || m.SubPathExpr != "":
			skipped = append(skipped, m.Name+" (subPath)")
		case v.HostPath != nil:
			binds = append(binds, bindMount{Source: v.HostPath.Path, Target: m.MountPath, ReadOnly: m.ReadOnly})
		case v.EmptyDir != nil:
			binds = append(binds, bindMount{Source: filepath.Join(podDir, "volumes", v.Name), Target: m.MountPath, ReadOnly: m.ReadOnly})
		case v.ConfigMap != nil:
			binds = append(binds, bindMount{Source: configMapVolumeDir(podDir, v.Name), Target: m.MountPath, ReadOnly: true})
		case v.Projected != nil && isServiceAccountVolume(v):
			if files != nil {
				binds = append(binds, bindMount{Source: files.Dir, Target: m.MountPath, ReadOnly: true})
			}
		default:
			skipped = append(skipped, m.Name)
		}
	}
	return binds, skipped
}

// createHostPathFiles creates, as a kubelet does, each missing hostPath of type FileOrCreate as an empty file
// (mode 0644) before the container starts: `labvm container` would otherwise take a missing source for a
// directory. (A FileOrCreate hostPath such as /run/xtables.lock must stay a file for the node's other users.)
func createHostPathFiles(pod *corev1.Pod) error {
	for _, v := range pod.Spec.Volumes {
		if v.HostPath == nil || v.HostPath.Type == nil || *v.HostPath.Type != corev1.HostPathFileOrCreate {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(v.HostPath.Path), 0o755); err != nil {
			return fmt.Errorf("hostPath volume %s: %w", v.Name, err)
		}
		f, err := os.OpenFile(v.HostPath.Path, os.O_CREATE|os.O_RDONLY, 0o644)
		if err != nil {
			return fmt.Errorf("hostPath volume %s: %w", v.Name, err)
		}
		f.Close()
	}
	return nil
}

// isServiceAccountVolume recognises the kube-api-access-* volume that the ServiceAccount admission plugin adds.
func isServiceAccountVolume(v corev1.Volume) bool {
	for _, s := range v.Projected.Sources {
		if s.ServiceAccountToken != nil {
			return true
		}
	}
	return false
}

// containerArgv wraps argv so that it runs with binds and, unless sec is nil or privileged, the container's
// security settings: `LABVM container [--bind S:T[:ro]]... [--caps=A,B] [--no-new-privs] [--read-only-root] -- ARGV`.
func containerArgv(labvm string, binds []bindMount, sec *containerSecurity, argv []string) []string {
	if len(binds) == 0 && (sec == nil || (sec.Privileged && sec.Hostname == "")) {
		return argv
	}
	out := []string{labvm, ContainerCommand}
	for _, b := range binds {
		out = append(out, "--bind", b.String())
	}
	if sec != nil {
		out = append(out, sec.args()...)
	}
	return append(append(out, "--"), argv...)
}

// ExecInMountNamespace is `labvm container`: it makes a private mount namespace that receives but never
// sends mount events, bind-mounts each --bind, makes the root read-only (--read-only-root), sets
// no_new_privs (--no-new-privs), keeps only the --caps capabilities, and execs the rest of the command line
// in place (the pid stays the kubelet's child, so signals and exit codes are the process's own). It returns
// only on error.
func ExecInMountNamespace(args []string) error {
	var binds []bindMount
	var caps []string
	restrictCaps, noNewPrivs, readOnlyRoot := false, false, false
	hostname := ""
	for len(args) > 0 && args[0] != "--" {
		switch {
		case strings.HasPrefix(args[0], "--hostname="):
			hostname = strings.TrimPrefix(args[0], "--hostname=")
		case args[0] == "--bind" && len(args) >= 2:
			b, err := parseBindMount(args[1])
			if err != nil {
				return err
			}
			binds = append(binds, b)
			args = args[2:]
			continue
		case strings.HasPrefix(args[0], "--caps="):
			restrictCaps = true
			if v := strings.TrimPrefix(args[0], "--caps="); v != "" {
				caps = strings.Split(v, ",")
			}
		case args[0] == "--no-new-privs":
			noNewPrivs = true
		case args[0] == "--read-only-root":
			readOnlyRoot = true
		default:
			return fmt.Errorf("usage: labvm %s [--bind SOURCE:TARGET[:ro]]... [--caps=CAP,...] [--no-new-privs] [--read-only-root] [--hostname=NAME] -- COMMAND [ARG ...]", ContainerCommand)
		}
		args = args[1:]
	}
	if len(args) < 2 {
		return errors.New("no command after --")
	}
	argv := args[1:]
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return err
	}
	// The new mount namespace belongs to this thread (CLONE_NEWNS unshares the filesystem context too), and
	// execve keeps the calling thread's namespaces: stay on it until exec.
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("unshare mount namespace: %w", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("making mounts private: %w", err)
	}
	if hostname != "" {
		if err := setUTSHostname(hostname); err != nil {
			return err
		}
	}
	for _, b := range binds {
		if err := bind(b); err != nil {
			return err
		}
	}
	if readOnlyRoot {
		// Only the root mount: the binds above are mounts of their own and keep their mode.
		if err := unix.Mount("", "/", "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("read-only root: %w", err)
		}
	}
	if noNewPrivs {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("no_new_privs: %w", err)
		}
	}
	if restrictCaps {
		if err := restrictCapabilities(caps); err != nil {
			return err
		}
	}
	return unix.Exec(path, argv, os.Environ())
}

func bind(b bindMount) error {
	st, err := os.Stat(b.Source)
	if err != nil {
		// A missing hostPath without a type check: the container sees an empty directory.
		if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("bind source %s: %w", b.Source, err)
		}
		if err := os.MkdirAll(b.Source, 0o755); err != nil {
			return fmt.Errorf("bind source %s: %w", b.Source, err)
		}
		st, _ = os.Stat(b.Source)
	}
	if st != nil && st.IsDir() {
		err = os.MkdirAll(b.Target, 0o755)
	} else {
		if err = os.MkdirAll(filepath.Dir(b.Target), 0o755); err == nil {
			var f *os.File
			if f, err = os.OpenFile(b.Target, os.O_CREATE|os.O_RDONLY, 0o644); err == nil {
				f.Close()
			}
		}
	}
	if err != nil {
		return fmt.Errorf("bind target %s: %w", b.Target, err)
	}
	if err := unix.Mount(b.Source, b.Target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s: %w", b, err)
	}
	if b.ReadOnly {
		if err := unix.Mount("", b.Target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("read-only %s: %w", b.Target, err)
		}
	}
	return nil
}
