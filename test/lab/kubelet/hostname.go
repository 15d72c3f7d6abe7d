package kubelet

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
)

// podHostname is the hostname a pod's containers see, as the kubelet sets it: spec.hostname, else the pod's
// name, cut to a DNS label's 63 characters (without a trailing '-' or '.'). Upstream's e2e servers (agnhost
// netexec, serve-hostname) answer with it, and the Service specs tell endpoints apart by it.
func podHostname(pod *corev1.Pod) string {
	h := pod.Spec.Hostname
	if h == "" {
		h = pod.Name
	}
	if len(h) > 63 {
		h = strings.TrimRight(h[:63], "-.")
	}
	return h
}

// setUTSHostname gives the calling thread a UTS namespace of its own named hostname (the caller has locked
// it to its OS thread and execs next).
// Equivalent to: `unshare --uts hostname NAME`.
func setUTSHostname(hostname string) error {
	if err := unix.Unshare(unix.CLONE_NEWUTS); err != nil {
		return fmt.Errorf("unshare UTS namespace: %w", err)
	}
	if err := unix.Sethostname([]byte(hostname)); err != nil {
		return fmt.Errorf("sethostname %q: %w", hostname, err)
	}
	return nil
}
