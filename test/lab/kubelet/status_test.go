package kubelet

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"
)

func testPod() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-0", Namespace: "default", UID: "uid-1"},
		Spec: corev1.PodSpec{NodeName: "node-a", Containers: []corev1.Container{
			{Name: "app", Image: "ipvs-operator/echo:lab"}, {Name: "side", Image: "ipvs-operator/echo:lab"},
		}},
		Status: corev1.PodStatus{Phase: corev1.PodPending, QOSClass: corev1.PodQOSBestEffort},
	}
}

func conditionOf(s corev1.PodStatus, t corev1.PodConditionType) corev1.ConditionStatus {
	if c := findCondition(s.Conditions, t); c != nil {
		return c.Status
	}
	return ""
}

func TestComputePodStatus(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)
	running := processState{Running: true, Starts: 1, StartedAt: t0}
	crashed := processState{Starts: 3, Restarts: 2, Waiting: "CrashLoopBackOff",
		LastExit: &exitInfo{ExitCode: 1, Reason: "Error", StartedAt: t0, FinishedAt: t0.Add(time.Second)}}
	snap := func(netReady bool, a, b containerSnapshot) podSnapshot {
		a.Name, b.Name = "app", "side"
		return podSnapshot{HostIP: "192.168.100.11", PodIP: "10.244.1.2", NetworkReady: netReady, StartTime: t0,
			Containers: []containerSnapshot{a, b}}
	}
	cases := []struct {
		name       string
		gates      []corev1.PodReadinessGate
		snap       podSnapshot
		wantPhase  corev1.PodPhase
		wantReady  corev1.ConditionStatus
		wantCReady corev1.ConditionStatus
		check      func(t *testing.T, s corev1.PodStatus)
	}{
		{"creating", nil, snap(false, containerSnapshot{}, containerSnapshot{}), corev1.PodPending, "False", "False",
			func(t *testing.T, s corev1.PodStatus) {
				if s.ContainerStatuses[0].State.Waiting == nil || s.ContainerStatuses[0].State.Waiting.Reason != "ContainerCreating" {
					t.Errorf("waiting state = %+v", s.ContainerStatuses[0].State)
				}
				if conditionOf(s, corev1.PodReadyToStartContainers) != "False" {
					t.Error("network not ready yet")
				}
			}},
		{"running, one not ready", nil, snap(true,
			containerSnapshot{Process: running, Ready: true, Started: true},
			containerSnapshot{Process: running, Ready: false, Started: true}), corev1.PodRunning, "False", "False", nil},
		{"all ready", nil, snap(true,
			containerSnapshot{Process: running, Ready: true, Started: true},
			containerSnapshot{Process: running, Ready: true, Started: true}), corev1.PodRunning, "True", "True",
			func(t *testing.T, s corev1.PodStatus) {
				if s.PodIP != "10.244.1.2" || s.HostIP != "192.168.100.11" || len(s.PodIPs) != 1 || s.StartTime == nil {
					t.Errorf("addresses/start time: %+v", s)
				}
				if s.QOSClass != corev1.PodQOSBestEffort {
					t.Error("fields the kubelet does not own must stay")
				}
				if cs := s.ContainerStatuses[0]; cs.State.Running == nil || !cs.Ready || !*cs.Started {
					t.Errorf("container status = %+v", cs)
				}
			}},
		{"readiness gate missing", []corev1.PodReadinessGate{{ConditionType: "example.com/gate"}}, snap(true,
			containerSnapshot{Process: running, Ready: true, Started: true},
			containerSnapshot{Process: running, Ready: true, Started: true}), corev1.PodRunning, "False", "True", nil},
		{"crash loop", nil, snap(true,
			containerSnapshot{Process: crashed},
			containerSnapshot{Process: running, Ready: true, Started: true}), corev1.PodRunning, "False", "False",
			func(t *testing.T, s corev1.PodStatus) {
				cs := s.ContainerStatuses[0]
				if cs.RestartCount != 2 || cs.State.Waiting == nil || cs.State.Waiting.Reason != "CrashLoopBackOff" ||
					cs.LastTerminationState.Terminated == nil || cs.LastTerminationState.Terminated.ExitCode != 1 || cs.Ready {
					t.Errorf("crashed container status = %+v", cs)
				}
			}},
		{"ready flag needs a running process", nil, snap(true,
			containerSnapshot{Process: processState{Stopped: true, Starts: 1, LastExit: &exitInfo{ExitCode: 143}}, Ready: true},
			containerSnapshot{Process: running, Ready: true, Started: true}), corev1.PodRunning, "False", "False",
			func(t *testing.T, s corev1.PodStatus) {
				if s.ContainerStatuses[0].State.Terminated == nil || s.ContainerStatuses[0].Ready {
					t.Errorf("stopped container = %+v", s.ContainerStatuses[0])
				}
			}},
	}
	now := metav1.NewTime(t0.Add(time.Minute))
	for _, c := range cases {
		pod := testPod()
		pod.Spec.ReadinessGates = c.gates
		s := computePodStatus(pod, c.snap, now)
		if s.Phase != c.wantPhase || conditionOf(s, corev1.PodReady) != c.wantReady || conditionOf(s, corev1.ContainersReady) != c.wantCReady {
			t.Errorf("%s: phase=%s Ready=%s ContainersReady=%s", c.name, s.Phase, conditionOf(s, corev1.PodReady), conditionOf(s, corev1.ContainersReady))
		}
		if conditionOf(s, corev1.PodScheduled) != "True" || conditionOf(s, corev1.PodInitialized) != "True" {
			t.Errorf("%s: PodScheduled/Initialized must be True", c.name)
		}
		if c.check != nil {
			c.check(t, s)
		}
	}
}

// TestComputePodStatusWithSidecar: a restartable init container initializes the pod once started, shows as
// running, and its readiness counts for the pod's (upstream's "restartable init containers" Service specs
// need the pod Ready while only the sidecar serves).
func TestComputePodStatusWithSidecar(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)
	running := processState{Running: true, Starts: 1, StartedAt: t0}
	app := containerSnapshot{Name: "app", Process: running, Ready: true, Started: true}
	side := containerSnapshot{Name: "side", Process: running, Ready: true, Started: true}
	waiting := []containerSnapshot{{Name: "app"}, {Name: "side"}}
	for _, c := range []struct {
		name                  string
		sidecar               containerSnapshot
		containers            []containerSnapshot
		wantInitialized       corev1.ConditionStatus
		wantReady, wantCReady corev1.ConditionStatus
		wantPhase             corev1.PodPhase
	}{
		{"sidecar starting", containerSnapshot{Name: "sidecar", Sidecar: true}, waiting, "False", "False", "False", corev1.PodPending},
		{"sidecar started, containers starting", containerSnapshot{Name: "sidecar", Sidecar: true, Process: running, Started: true},
			waiting, "True", "False", "False", corev1.PodRunning},
		{"all ready", containerSnapshot{Name: "sidecar", Sidecar: true, Process: running, Started: true, Ready: true},
			[]containerSnapshot{app, side}, "True", "True", "True", corev1.PodRunning},
		{"sidecar not ready", containerSnapshot{Name: "sidecar", Sidecar: true, Process: running, Started: true},
			[]containerSnapshot{app, side}, "True", "False", "False", corev1.PodRunning},
	} {
		pod := testPod()
		pod.Spec.InitContainers = []corev1.Container{{Name: "sidecar", RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways)}}
		snap := podSnapshot{PodIP: "10.244.1.2", NetworkReady: true, StartTime: t0,
			InitContainers: []containerSnapshot{c.sidecar}, Containers: c.containers}
		s := computePodStatus(pod, snap, metav1.NewTime(t0.Add(time.Minute)))
		if got := conditionOf(s, corev1.PodInitialized); got != c.wantInitialized {
			t.Errorf("%s: Initialized=%s", c.name, got)
		}
		if conditionOf(s, corev1.PodReady) != c.wantReady || conditionOf(s, corev1.ContainersReady) != c.wantCReady || s.Phase != c.wantPhase {
			t.Errorf("%s: phase=%s Ready=%s ContainersReady=%s", c.name, s.Phase, conditionOf(s, corev1.PodReady), conditionOf(s, corev1.ContainersReady))
		}
		if cs := s.InitContainerStatuses[0]; (cs.State.Running != nil) != c.sidecar.Process.Running || cs.Ready != c.sidecar.Ready {
			t.Errorf("%s: sidecar status = %+v", c.name, cs)
		}
	}
}

func TestComputePodStatusKeepsTransitionTimes(t *testing.T) {
	t0 := metav1.NewTime(time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC))
	t1 := metav1.NewTime(t0.Add(time.Minute))
	pod := testPod()
	pod.Spec.Containers = pod.Spec.Containers[:1]
	ready := podSnapshot{NetworkReady: true, Containers: []containerSnapshot{{Name: "app", Process: processState{Running: true, Starts: 1}, Ready: true, Started: true}}}
	pod.Status = computePodStatus(pod, ready, t0)
	again := computePodStatus(pod, ready, t1)
	if c := findCondition(again.Conditions, corev1.PodReady); !c.LastTransitionTime.Equal(&t0) {
		t.Errorf("unchanged Ready moved its transition time to %v", c.LastTransitionTime)
	}
	ready.Containers[0].Ready = false
	flipped := computePodStatus(pod, ready, t1)
	if c := findCondition(flipped.Conditions, corev1.PodReady); c.Status != "False" || !c.LastTransitionTime.Equal(&t1) {
		t.Errorf("flipped Ready = %+v", c)
	}
}

func TestWritePodStatusOnlyWhenChanged(t *testing.T) {
	pod := testPod()
	client := fake.NewClientset(pod)
	ctx := context.Background()
	var writes int
	countingCompute := func(s corev1.PodStatus) func(*corev1.Pod) corev1.PodStatus {
		return func(*corev1.Pod) corev1.PodStatus { return s }
	}
	client.PrependReactor("update", "pods", func(k8sAction) (bool, runtimeObject, error) {
		writes++
		return false, nil, nil
	})
	want := *pod.Status.DeepCopy()
	want.Phase = corev1.PodRunning
	want.PodIP = "10.244.1.9"
	updated, err := writePodStatus(ctx, client, pod, pod.UID, countingCompute(want))
	if err != nil || updated == nil || updated.Status.PodIP != "10.244.1.9" {
		t.Fatalf("first write: %v %v", updated, err)
	}
	if _, err := writePodStatus(ctx, client, updated, pod.UID, countingCompute(want)); err != nil {
		t.Fatal(err)
	}
	if writes != 1 {
		t.Errorf("%d writes, want 1 (the second status was unchanged)", writes)
	}
	// A different UID (pod replaced under the same name) is never written.
	if out, err := writePodStatus(ctx, client, updated, "other-uid", countingCompute(corev1.PodStatus{})); err != nil || out != nil {
		t.Errorf("write for another UID: %v %v", out, err)
	}
	got, _ := client.CoreV1().Pods("default").Get(ctx, "web-0", metav1.GetOptions{})
	if got.Status.PodIP != "10.244.1.9" || got.Status.Phase != corev1.PodRunning {
		t.Errorf("stored status = %+v", got.Status)
	}
}

func TestDeletePodObjectToleratesGone(t *testing.T) {
	pod := testPod()
	client := fake.NewClientset(pod)
	key := keyOf(pod)
	if err := deletePodObject(context.Background(), client, key, pod.UID); err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().Pods("default").Get(context.Background(), "web-0", metav1.GetOptions{}); err == nil {
		t.Error("pod still exists")
	}
	if err := deletePodObject(context.Background(), client, key, pod.UID); err != nil {
		t.Errorf("second delete: %v", err)
	}
}

// TestComputedStatusSurvivesTheAPIRoundTrip: a status read back from the API server (times in whole seconds)
// must compare equal to the one computed again from the same state, or the kubelet would write it forever.
func TestComputedStatusSurvivesTheAPIRoundTrip(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 10, 0, 0, 123456789, time.Local)
	pod := testPod()
	pod.Spec.Containers = pod.Spec.Containers[:1]
	snap := podSnapshot{HostIP: "192.168.100.11", PodIP: "10.244.1.2", NetworkReady: true, StartTime: t0,
		Containers: []containerSnapshot{{Name: "app", Image: "img", ContainerID: "lab://x", Ready: true, Started: true,
			Process: processState{Running: true, Starts: 2, Restarts: 1, StartedAt: t0.Add(time.Second),
				LastExit: &exitInfo{ExitCode: 1, Reason: "Error", StartedAt: t0, FinishedAt: t0.Add(500 * time.Millisecond)}}}}}
	status := computePodStatus(pod, snap, metav1.NewTime(t0.Add(1700*time.Millisecond)))
	data, err := json.Marshal(status)
	if err != nil {
		t.Fatal(err)
	}
	var stored corev1.PodStatus
	if err := json.Unmarshal(data, &stored); err != nil {
		t.Fatal(err)
	}
	pod.Status = stored
	again := computePodStatus(pod, snap, metav1.NewTime(t0.Add(20*time.Second)))
	if !apiequality.Semantic.DeepEqual(again, pod.Status) {
		t.Errorf("recomputed status differs from the stored one:\n%s", cmp.Diff(pod.Status, again))
	}
}
