package kubelet

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// minimumStopGracePeriod is what a container gets between SIGTERM and SIGKILL after a preStop hook that used
// up (nearly) all of the grace period: the kubelet's minimumGracePeriodInSeconds.
const minimumStopGracePeriod = 2 * time.Second

// hasPreStop tells whether a container declares a preStop hook.
func hasPreStop(c *corev1.Container) bool {
	return c.Lifecycle != nil && c.Lifecycle.PreStop != nil
}

// runLifecycleHook runs one lifecycle hook (exec, httpGet or sleep) against t until it ends or ctx does. As a
// kubelet, an httpGet hook goes from the node to the pod, an exec hook runs inside the pod, and tcpSocket,
// kept in the API only for compatibility, does nothing.
func runLifecycleHook(ctx context.Context, h *corev1.LifecycleHandler, t probeTarget) error {
	switch {
	case h.Exec != nil:
		if len(h.Exec.Command) == 0 {
			return fmt.Errorf("exec hook without a command")
		}
		return t.Exec(ctx, h.Exec.Command)
	case h.HTTPGet != nil:
		return probeHTTP(ctx, h.HTTPGet, t)
	case h.Sleep != nil:
		timer := time.NewTimer(time.Duration(h.Sleep.Seconds) * time.Second)
		defer timer.Stop()
		select {
		case <-timer.C:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	case h.TCPSocket != nil:
		return nil
	}
	return fmt.Errorf("lifecycle hook has no handler")
}

// stopGraceAfterHook is the time between SIGTERM and SIGKILL once a preStop hook has taken elapsed of the
// pod's grace period: what is left, at least minimumStopGracePeriod (as a kubelet), at most maxGrace (the lab's
// cap, as for a container without a hook).
func stopGraceAfterHook(podGrace, elapsed, maxGrace time.Duration) time.Duration {
	return min(max(podGrace-elapsed, minimumStopGracePeriod), maxGrace)
}
