package kubelet

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// containerSnapshot is one container's runtime state at a moment.
type containerSnapshot struct {
	Name, Image, ImageID string
	ContainerID          string
	Process              processState
	Ready                bool
	Started              bool // running and past its startup probe
	Sidecar              bool // a restartable init container
}

// podSnapshot is the pod's runtime state at a moment.
type podSnapshot struct {
	HostIP       string
	PodIP        string
	NetworkReady bool
	StartTime    time.Time
	Containers   []containerSnapshot // in spec order
	// InitContainers are the init containers the lab runs, in spec order; empty before they are made.
	InitContainers []containerSnapshot
	// HostIPv6 and PodIPv6 are the second family's addresses on a dual-stack node ("" otherwise).
	HostIPv6, PodIPv6 string
	// Evicted is the eviction message once the pod was evicted and its containers stopped ("" otherwise).
	Evicted string
}

// computePodStatus is the status a kubelet would report for pod in this state. It starts from the pod's
// current status (so fields the kubelet does not own, such as qosClass or conditions set by others, stay) and
// keeps a condition's lastTransitionTime unless its status changes.
func computePodStatus(pod *corev1.Pod, snap podSnapshot, now metav1.Time) corev1.PodStatus {
	now = apiTime(now.Time)
	status := *pod.Status.DeepCopy()
	if snap.HostIP != "" {
		status.HostIP = snap.HostIP
		status.HostIPs = []corev1.HostIP{{IP: snap.HostIP}}
		if snap.HostIPv6 != "" {
			status.HostIPs = append(status.HostIPs, corev1.HostIP{IP: snap.HostIPv6})
		}
	}
	if snap.PodIP != "" {
		status.PodIP = snap.PodIP
		status.PodIPs = []corev1.PodIP{{IP: snap.PodIP}}
		if snap.PodIPv6 != "" {
			status.PodIPs = append(status.PodIPs, corev1.PodIP{IP: snap.PodIPv6})
		}
	}
	if status.StartTime == nil && !snap.StartTime.IsZero() {
		t := apiTime(snap.StartTime)
		status.StartTime = &t
	}

	// Before the worker made its containers (both lists at once), a pod with init containers is not
	// initialized; afterwards it is once each init container completed.
	initialized := len(snap.Containers) > 0 || len(pod.Spec.InitContainers) == 0
	if len(snap.InitContainers) > 0 {
		status.InitContainerStatuses = make([]corev1.ContainerStatus, 0, len(snap.InitContainers))
	}
	anyStarted := false
	allReady := len(snap.Containers) > 0
	for _, c := range snap.InitContainers {
		cs := containerStatus(c)
		if c.Sidecar {
			// A sidecar counts as initialized once started, and its readiness counts for the pod's, as
			// with the kubelet's restartable init containers.
			if !c.Started {
				initialized = false
			}
			if !cs.Ready {
				allReady = false
			}
			if c.Process.Starts > 0 || c.Process.Running {
				anyStarted = true
			}
		} else {
			cs.Ready = c.Process.Succeeded // an init container is ready once it completed
			if !c.Process.Succeeded {
				initialized = false
			}
		}
		status.InitContainerStatuses = append(status.InitContainerStatuses, cs)
	}
	status.ContainerStatuses = make([]corev1.ContainerStatus, 0, len(snap.Containers))
	for _, c := range snap.Containers {
		cs := containerStatus(c)
		status.ContainerStatuses = append(status.ContainerStatuses, cs)
		if c.Process.Starts > 0 || c.Process.Running {
			anyStarted = true
		}
		if !cs.Ready {
			allReady = false
		}
	}
	switch {
	case snap.Evicted != "":
		status.Phase, status.Reason, status.Message = corev1.PodFailed, evictedReason, snap.Evicted
	case anyStarted:
		status.Phase = corev1.PodRunning
	default:
		status.Phase = corev1.PodPending
	}

	gatesReady := true
	for _, gate := range pod.Spec.ReadinessGates {
		if c := findCondition(pod.Status.Conditions, gate.ConditionType); c == nil || c.Status != corev1.ConditionTrue {
			gatesReady = false
		}
	}
	setCondition(&status, corev1.PodScheduled, true, "", now)
	setCondition(&status, corev1.PodReadyToStartContainers, snap.NetworkReady, "", now)
	reason := ""
	if !initialized {
		reason = "ContainersNotInitialized"
	}
	setCondition(&status, corev1.PodInitialized, initialized, reason, now)
	reason = ""
	if !allReady {
		reason = "ContainersNotReady"
	}
	setCondition(&status, corev1.ContainersReady, allReady, reason, now)
	if allReady && !gatesReady {
		reason = "ReadinessGatesNotReady"
	}
	setCondition(&status, corev1.PodReady, allReady && gatesReady, reason, now)
	return status
}

func containerStatus(c containerSnapshot) corev1.ContainerStatus {
	started := c.Started
	cs := corev1.ContainerStatus{
		Name:         c.Name,
		Image:        c.Image,
		ImageID:      c.ImageID,
		ContainerID:  c.ContainerID,
		RestartCount: c.Process.Restarts,
		Ready:        c.Ready && c.Process.Running,
		Started:      &started,
	}
	switch {
	case c.Process.Running:
		cs.State.Running = &corev1.ContainerStateRunning{StartedAt: apiTime(c.Process.StartedAt)}
	case c.Process.Stopped && c.Process.LastExit != nil:
		cs.State.Terminated = terminatedState(c.Process.LastExit, c.ContainerID)
	default:
		reason := c.Process.Waiting
		if reason == "" {
			reason = "ContainerCreating"
		}
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: reason, Message: c.Process.WaitingMessage}
	}
	if c.Process.LastExit != nil && cs.State.Terminated == nil {
		cs.LastTerminationState.Terminated = terminatedState(c.Process.LastExit, "")
	}
	return cs
}

func terminatedState(e *exitInfo, containerID string) *corev1.ContainerStateTerminated {
	return &corev1.ContainerStateTerminated{
		ExitCode:    e.ExitCode,
		Signal:      e.Signal,
		Reason:      e.Reason,
		Message:     e.Message,
		StartedAt:   apiTime(e.StartedAt),
		FinishedAt:  apiTime(e.FinishedAt),
		ContainerID: containerID,
	}
}

func findCondition(conds []corev1.PodCondition, t corev1.PodConditionType) *corev1.PodCondition {
	for i := range conds {
		if conds[i].Type == t {
			return &conds[i]
		}
	}
	return nil
}

// setCondition sets a pod condition, moving lastTransitionTime only when its status changes.
func setCondition(status *corev1.PodStatus, t corev1.PodConditionType, ok bool, reason string, now metav1.Time) {
	want := corev1.ConditionFalse
	if ok {
		want = corev1.ConditionTrue
	}
	if c := findCondition(status.Conditions, t); c != nil {
		if c.Status != want {
			c.LastTransitionTime = now
		}
		c.Status, c.Reason = want, reason
		return
	}
	status.Conditions = append(status.Conditions, corev1.PodCondition{Type: t, Status: want, Reason: reason, LastTransitionTime: now})
}

// apiTime is t as the API server stores it (whole seconds), so that a status read back compares equal to
// the one computed again and is not rewritten forever.
func apiTime(t time.Time) metav1.Time {
	if t.IsZero() {
		return metav1.Time{}
	}
	return metav1.NewTime(t.Truncate(time.Second))
}
