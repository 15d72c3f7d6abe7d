package kubelet

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// Ephemeral-storage eviction, as the kubelet's eviction manager does it for a container that exceeds its own
// limit (pkg/kubelet/eviction, containerEphemeralStorageLimitEviction): the pod is killed with a grace period
// of 1 s and ends Failed, reason "Evicted", with the kubelet's message; the Pod object stays until deleted.
//
// A container runtime measures the container's writable layer. Lab containers share the VM's root
// filesystem, so a container with an ephemeral-storage limit gets a private working directory instead
// (writableDir), where relative writes land (upstream's spec writes `dd ... of=file`), and that directory's
// disk usage is what counts. Writes to absolute paths on the VM's root, and container logs (kept on the
// host share, across pods of the same name), are not counted; emptyDir volumes' sizeLimit is not enforced.

const (
	// evictedReason is the pod status reason of an evicted pod (the kubelet's eviction.Reason).
	evictedReason = "Evicted"
	// evictionGracePeriod is the kubelet's immediateEvictionGracePeriodSeconds.
	evictionGracePeriod = time.Second
)

// ephemeralStorageLimit is a container's ephemeral-storage limit, if it has a non-zero one.
func ephemeralStorageLimit(c *corev1.Container) (resource.Quantity, bool) {
	q, ok := c.Resources.Limits[corev1.ResourceEphemeralStorage]
	if !ok || q.IsZero() {
		return resource.Quantity{}, false
	}
	return q, true
}

// writableDir is where a container with an ephemeral-storage limit runs: its stand-in writable layer.
func writableDir(podDir, container string) string {
	return filepath.Join(podDir, "writable", container)
}

// storageLimitExceeded is the eviction manager's decision for one pod: the first container (in spec order)
// whose usage is above its limit, and the kubelet's message for it. usage holds the bytes each measured
// container uses; a container without a limit or without a measurement never triggers.
func storageLimitExceeded(containers []corev1.Container, usage map[string]int64) (string, bool) {
	for i := range containers {
		c := &containers[i]
		limit, ok := ephemeralStorageLimit(c)
		used, measured := usage[c.Name]
		if !ok || !measured {
			continue
		}
		if limit.Cmp(*resource.NewQuantity(used, resource.BinarySI)) < 0 {
			return fmt.Sprintf("Container %s exceeded its local ephemeral storage limit %q. ", c.Name, limit.String()), true
		}
	}
	return "", false
}

// diskUsage is the space the files under dir take on disk, as `du -s` counts it (allocated blocks, so a
// sparse file counts what it really uses); files that vanish during the walk are skipped.
func diskUsage(dir string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		info, err := d.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			total += st.Blocks * 512
		} else {
			total += info.Size()
		}
		return nil
	})
	return total, err
}

// storageLimited are the pod's long-running containers with an ephemeral-storage limit (init containers
// that run to completion are not counted, as by the kubelet).
func storageLimited(pod *corev1.Pod) []corev1.Container {
	var out []corev1.Container
	for _, c := range pod.Spec.InitContainers {
		if _, ok := ephemeralStorageLimit(&c); ok && c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			out = append(out, c)
		}
	}
	for _, c := range pod.Spec.Containers {
		if _, ok := ephemeralStorageLimit(&c); ok {
			out = append(out, c)
		}
	}
	return out
}

// watchStorage measures the pod's storage-limited containers every interval until ctx ends, and asks for
// the pod's eviction (w.evict) the first time one exceeds its limit.
func (w *podWorker) watchStorage(ctx context.Context, interval time.Duration) {
	limited := storageLimited(w.currentPod())
	if len(limited) == 0 {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		usage := map[string]int64{}
		for _, c := range limited {
			used, err := diskUsage(writableDir(w.dir, c.Name))
			if err != nil {
				w.log.Error(err, "Measuring container storage failed", "container", c.Name)
				continue
			}
			usage[c.Name] = used
		}
		if msg, ok := storageLimitExceeded(limited, usage); ok {
			w.evict(msg)
			return
		}
	}
}

// evict asks the worker to evict its pod with message (once).
func (w *podWorker) evict(message string) {
	w.evictOnce.Do(func() {
		w.mu.Lock()
		w.evictMessage = message
		w.mu.Unlock()
		close(w.evictCh)
	})
}

// evictPod kills the pod's containers with the eviction grace period and reports it Failed, reason
// Evicted. The network and the Pod object stay until the pod is deleted.
func (w *podWorker) evictPod(ctx context.Context) {
	w.mu.Lock()
	msg := w.evictMessage
	w.mu.Unlock()
	w.log.Info("Evicting pod", "message", msg)
	w.stopContainersWithin(ctx, evictionGracePeriod)
	w.mu.Lock()
	w.evicted = true
	w.mu.Unlock()
	w.syncStatus(ctx)
}

// prepareWritableDir makes the container's writable directory, when it has an ephemeral-storage limit, and
// returns the working directory to start it in.
func prepareWritableDir(podDir string, c *corev1.Container) (string, error) {
	if _, ok := ephemeralStorageLimit(c); !ok {
		return "/", nil
	}
	dir := writableDir(podDir, c.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("container writable directory: %w", err)
	}
	return dir, nil
}
