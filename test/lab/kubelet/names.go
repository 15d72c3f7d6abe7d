package kubelet

import (
	"crypto/sha1"
	"encoding/hex"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
)

// netnsName is the pod's network namespace: <prefix><namespace>-<name>, e.g. pod-default-web-0. Pod names
// are DNS labels/subdomains, so the result is a valid file name.
func netnsName(prefix string, pod *corev1.Pod) string {
	return prefix + pod.Namespace + "-" + pod.Name
}

// hostVethName is the bridge side of the pod's veth: "veth" and 11 hex digits of a hash of the network
// namespace's name, within the 15-byte limit on interface names and stable across kubelet restarts.
func hostVethName(netns string) string {
	sum := sha1.Sum([]byte(netns))
	return "veth" + hex.EncodeToString(sum[:])[:11]
}

// containerLogPath is <dir>/<namespace>_<pod>_<container>.log, as kubelet names its log symlinks.
func containerLogPath(dir string, pod *corev1.Pod, container string) string {
	return filepath.Join(dir, pod.Namespace+"_"+pod.Name+"_"+container+".log")
}

// podDir holds the pod's service account files and kubeconfig.
func podDir(root string, pod *corev1.Pod) string {
	return filepath.Join(root, pod.Namespace+"_"+pod.Name+"_"+string(pod.UID))
}
