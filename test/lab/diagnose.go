package lab

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Diagnose writes what a reader of a failed run needs when the cluster did not become ready, since the run
// directory is gone once the lab stops: every pod's phase, readiness and container states, and the last lines
// of the kubelets' logs and of the operator's, agents' and CoreDNS's container logs.
func (l *Lab) Diagnose(ctx context.Context, w io.Writer) {
	pods := &corev1.PodList{}
	if err := l.client.List(ctx, pods); err != nil {
		fmt.Fprintf(w, "lab diagnose: list pods: %v\n", err)
	}
	for _, p := range pods.Items {
		fmt.Fprintf(w, "pod %s/%s node=%s phase=%s deleting=%t\n", p.Namespace, p.Name, p.Spec.NodeName, p.Status.Phase, p.DeletionTimestamp != nil)
		for _, c := range p.Status.Conditions {
			fmt.Fprintf(w, "  %s=%s %s\n", c.Type, c.Status, c.Message)
		}
		for _, cs := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
			fmt.Fprintf(w, "  container %s ready=%t restarts=%d state=%s last=%s\n", cs.Name, cs.Ready, cs.RestartCount, stateText(cs.State), stateText(cs.LastTerminationState))
		}
	}
	logs := filepath.Join(l.shareDir, "logs")
	files, _ := filepath.Glob(filepath.Join(logs, "kubelet-*.log"))
	podLogs, _ := filepath.Glob(filepath.Join(logs, "pods", "*.log"))
	files = append(files, podLogs...)
	sort.Strings(files)
	for _, f := range files {
		if base := filepath.Base(f); strings.HasPrefix(base, "kubelet-") || strings.HasPrefix(base, "ipvs-operator-system_") || strings.HasPrefix(base, "kube-system_") {
			fmt.Fprintf(w, "--- last lines of %s\n%s\n", base, tail(f, 25))
		}
	}
}

func stateText(s corev1.ContainerState) string {
	switch {
	case s.Running != nil:
		return "running"
	case s.Waiting != nil:
		return "waiting(" + s.Waiting.Reason + ")"
	case s.Terminated != nil:
		return fmt.Sprintf("terminated(%s, exit %d)", s.Terminated.Reason, s.Terminated.ExitCode)
	}
	return "-"
}

// tail is the last n lines of a file, or why it could not be read.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
