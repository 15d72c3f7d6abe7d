package kubelet

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/vishvananda/netns"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
)

// podWorker owns one pod's life on the node: network, processes, probes, status and, once the pod is being
// deleted, the graceful stop and the final removal of the Pod object.
type podWorker struct {
	k           *Kubelet
	key         types.NamespacedName
	uid         types.UID
	log         logr.Logger
	hostNetwork bool
	netns       string // empty for host-network pods
	hostVeth    string
	files       serviceAccountFiles
	dir         string

	mu           sync.Mutex
	pod          *corev1.Pod // the latest version seen
	podIP        string
	podIPv6      string // a dual-stack node's pods only
	networkReady bool
	startTime    time.Time
	containers   []*container
	// initContainers run to completion, in order, before containers start; a sidecar among them starts in
	// its turn and keeps running.
	initContainers []*container
	needsToken     bool
	tokenWritten   bool

	kick          chan struct{} // a status update is wanted
	deleteOnce    sync.Once
	deleteCh      chan struct{} // the pod has a deletionTimestamp: stop gracefully, then delete the object
	abortOnce     sync.Once
	abortCh       chan struct{} // the Pod object is gone: stop at once
	evictOnce     sync.Once
	evictCh       chan struct{} // a container exceeded its ephemeral-storage limit (evictMessage says which)
	evictMessage  string
	evicted       bool // the containers are stopped and the pod is reported Failed, reason Evicted
	done          chan struct{}
	containersRun sync.WaitGroup
}

func newPodWorker(k *Kubelet, pod *corev1.Pod) *podWorker {
	w := &podWorker{
		k:           k,
		key:         types.NamespacedName{Namespace: pod.Namespace, Name: pod.Name},
		uid:         pod.UID,
		hostNetwork: pod.Spec.HostNetwork,
		pod:         pod,
		kick:        make(chan struct{}, 1),
		deleteCh:    make(chan struct{}),
		abortCh:     make(chan struct{}),
		evictCh:     make(chan struct{}),
		done:        make(chan struct{}),
	}
	w.log = k.log.WithValues("pod", w.key.String(), "uid", string(pod.UID))
	if !w.hostNetwork {
		w.netns = netnsName(k.cfg.NetnsPrefix, pod)
		w.hostVeth = hostVethName(w.netns)
	}
	w.dir = podDir(k.cfg.PodDir, pod)
	w.files = serviceAccountFilesIn(w.dir)
	return w
}

// observe hands the worker a newer version of its pod.
func (w *podWorker) observe(pod *corev1.Pod) {
	w.mu.Lock()
	w.pod = pod
	w.mu.Unlock()
	if pod.DeletionTimestamp != nil {
		w.deleteOnce.Do(func() { close(w.deleteCh) })
	}
	w.requestStatusSync()
}

// terminated tells whether the worker ended because its pod was deleted or replaced (not a kubelet stop).
func (w *podWorker) terminated() bool {
	select {
	case <-w.deleteCh:
		return true
	case <-w.abortCh:
		return true
	default:
		return false
	}
}

// abort stops the pod at once, without touching the API (the object is gone or replaced).
func (w *podWorker) abort() { w.abortOnce.Do(func() { close(w.abortCh) }) }

func (w *podWorker) requestStatusSync() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

func (w *podWorker) currentPod() *corev1.Pod {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pod
}

// run is the worker's life; it returns once the pod's processes are gone.
func (w *podWorker) run(ctx context.Context) {
	defer close(w.done)
	runCtx, stopContainers := context.WithCancel(ctx)
	defer stopContainers()

	if w.currentPod().DeletionTimestamp == nil {
		if !w.setUp(runCtx) {
			// Deleted or aborted before the network was up: nothing runs yet.
			w.finish(ctx, stopContainers)
			return
		}
	}
	heartbeat := time.NewTicker(w.k.cfg.HeartbeatInterval)
	defer heartbeat.Stop()
	for {
		select {
		case <-w.kick:
			w.syncStatus(ctx)
		case <-heartbeat.C:
			w.syncStatus(ctx)
		case <-w.deleteCh:
			w.gracePeriod(ctx)
			w.finish(ctx, stopContainers)
			return
		case <-w.evictCh:
			w.evictPod(ctx)
			// An evicted pod stays, Failed, until it is deleted (by its owner, or by hand).
			for {
				select {
				case <-w.kick:
					w.syncStatus(ctx)
					continue
				case <-heartbeat.C:
					w.syncStatus(ctx)
					continue
				case <-w.deleteCh:
				case <-w.abortCh:
				case <-ctx.Done():
					return
				}
				w.finish(ctx, stopContainers)
				return
			}
		case <-w.abortCh:
			w.finish(ctx, stopContainers)
			return
		case <-ctx.Done():
			// Kubelet shutdown: stop the processes, leave the network and the Pod object; a restarted kubelet
			// rebuilds both.
			stopContainers()
			w.containersRun.Wait()
			return
		}
	}
}

// setUp plumbs the network and starts the containers, retrying the network with backoff; it reports false if
// the pod was deleted or the kubelet stopped first.
func (w *podWorker) setUp(ctx context.Context) bool {
	backoff := wait.Backoff{Duration: 500 * time.Millisecond, Factor: 2, Cap: 15 * time.Second, Steps: math.MaxInt32}
	for {
		err := w.setUpNetwork(ctx)
		if err == nil {
			break
		}
		w.log.Error(err, "Pod network setup failed, retrying")
		t := time.NewTimer(backoff.Step())
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return false
		case <-w.deleteCh:
			t.Stop()
			return false
		case <-w.abortCh:
			t.Stop()
			return false
		}
	}
	w.mu.Lock()
	w.networkReady = true
	w.startTime = time.Now()
	w.mu.Unlock()
	w.startServiceAccountToken(ctx)
	w.startContainers(ctx)
	go w.watchStorage(ctx, w.k.cfg.StorageCheckInterval)
	w.requestStatusSync()
	return true
}

func (w *podWorker) setUpNetwork(ctx context.Context) error {
	if w.hostNetwork {
		w.mu.Lock()
		w.podIP = w.k.cfg.NodeIP.String()
		if w.k.cfg.NodeIPv6 != nil {
			w.podIPv6 = w.k.cfg.NodeIPv6.String()
		}
		w.mu.Unlock()
		return nil
	}
	ip, err := w.k.ipam.Allocate(string(w.uid))
	if err != nil {
		return err
	}
	// Record first, so that a crash between the two never leaves a namespace nobody will clean.
	if err := w.k.records.Record(w.netns, w.uid); err != nil {
		return fmt.Errorf("recording network namespace: %w", err)
	}
	if err := w.k.network.Teardown(w.hostVeth); err != nil {
		return err
	}
	if err := w.k.netns.Create(ctx, w.netns); err != nil {
		return err
	}
	handle, err := netns.GetFromPath(w.k.netns.Path(w.netns))
	if err != nil {
		return fmt.Errorf("opening network namespace %s: %w", w.netns, err)
	}
	defer handle.Close()
	iface, err := w.k.network.Setup(handle, w.hostVeth, ip)
	if err != nil {
		return err
	}
	if err := w.k.writePodResolvConf(w.currentPod(), w.netns); err != nil {
		return err
	}
	w.mu.Lock()
	w.podIP = ip.String()
	if iface.IPv6 != nil {
		w.podIPv6 = iface.IPv6.String()
	}
	w.mu.Unlock()
	w.log.Info("Pod network ready", "netns", w.netns, "ip", ip.String(), "ipv6", w.podIPv6, "veth", w.hostVeth)
	return nil
}

// gracePeriod stops the pod's containers the way a kubelet does once deletion starts: a container with a
// preStop hook runs it first, for up to the pod's whole grace period (not capped: the hook is the pod asking to
// be waited for, as upstream's "should create endpoints for unready pods" does with a 100 s sleep), then gets
// SIGTERM; every other container gets SIGTERM now. SIGKILL follows for those still running after
// min(the grace period, MaxGracePeriod). Status updates continue meanwhile, so that a server failing its
// readiness after SIGTERM (agnhost netexec --delay-shutdown) turns the pod unready while it still serves.
func (w *podWorker) gracePeriod(ctx context.Context) {
	podGrace := deletionGracePeriod(w.currentPod())
	grace := min(podGrace, w.k.cfg.MaxGracePeriod)
	w.log.Info("Pod is being deleted, stopping its containers", "gracePeriod", podGrace.String(), "afterSIGTERM", grace.String())
	w.stopContainers(ctx, grace, podGrace)
}

// stopContainersWithin sends SIGTERM to every container's process and SIGKILL to those still running after
// grace, with status updates meanwhile; preStop hooks are not run (an eviction). It returns once every process
// has exited, or at once on abort or kubelet stop (finish then stops what still runs).
func (w *podWorker) stopContainersWithin(ctx context.Context, grace time.Duration) {
	w.stopContainers(ctx, grace, 0)
}

// stopContainers is stopContainersWithin, except that with hookGrace > 0 a container with a preStop hook runs
// it first, for up to hookGrace, and gets SIGTERM once it has returned (stopGraceAfterHook until SIGKILL).
func (w *podWorker) stopContainers(ctx context.Context, grace, hookGrace time.Duration) {
	w.mu.Lock()
	all := append(append([]*container{}, w.initContainers...), w.containers...)
	w.mu.Unlock()
	hookCtx, stopHooks := context.WithCancel(ctx)
	defer stopHooks()
	// Sidecars with the rest: a kubelet stops them after the pod's containers, which no lab pod relies on.
	for _, c := range all {
		if hookGrace <= 0 || !hasPreStop(&c.spec) {
			c.sup.Terminate(grace)
			continue
		}
		go func() {
			start := time.Now()
			ctx, cancel := context.WithTimeout(hookCtx, hookGrace)
			defer cancel()
			if err := runLifecycleHook(ctx, c.spec.Lifecycle.PreStop, w.probeTarget(c)); err != nil {
				c.log.Error(err, "PreStop hook failed")
			}
			c.sup.Terminate(stopGraceAfterHook(hookGrace, time.Since(start), w.k.cfg.MaxGracePeriod))
		}()
	}
	stopped := make(chan struct{})
	go func() {
		w.containersRun.Wait()
		close(stopped)
	}()
	for {
		select {
		case <-stopped:
			return
		case <-w.abortCh:
			return
		case <-ctx.Done():
			return
		case <-w.kick:
			w.syncStatus(ctx)
		}
	}
}

// deletionGracePeriod is a deleted pod's grace period: the deletion's, else the pod's
// terminationGracePeriodSeconds, else the API's default of 30 s.
func deletionGracePeriod(pod *corev1.Pod) time.Duration {
	if s := pod.DeletionGracePeriodSeconds; s != nil {
		return time.Duration(*s) * time.Second
	}
	if s := pod.Spec.TerminationGracePeriodSeconds; s != nil {
		return time.Duration(*s) * time.Second
	}
	return corev1.DefaultTerminationGracePeriodSeconds * time.Second
}

// finish stops the processes (SIGTERM, then SIGKILL), removes the network, and, if the pod is being deleted
// (not aborted), reports the final status and deletes the Pod object.
func (w *podWorker) finish(ctx context.Context, stopContainers context.CancelFunc) {
	stopContainers()
	w.containersRun.Wait()
	aborted := false
	select {
	case <-w.abortCh:
		aborted = true
	default:
	}
	if !aborted && ctx.Err() == nil {
		w.syncStatus(ctx)
	}
	if err := w.tearDownNetwork(context.WithoutCancel(ctx)); err != nil {
		w.log.Error(err, "Pod network teardown failed")
	}
	if err := os.RemoveAll(w.dir); err != nil {
		w.log.Error(err, "Removing pod directory failed")
	}
	if aborted || ctx.Err() != nil {
		w.log.Info("Pod stopped")
		return
	}
	err := deletePodObject(ctx, w.k.client, w.key, w.uid)
	if err != nil {
		w.log.Error(err, "Deleting pod object failed")
		return
	}
	w.log.Info("Pod terminated and deleted")
}

func (w *podWorker) tearDownNetwork(ctx context.Context) error {
	defer w.k.ipam.Release(string(w.uid))
	if w.hostNetwork {
		return nil
	}
	return w.k.tearDownNetns(ctx, w.netns)
}

// deletePodObject removes the Pod for good once its processes are gone: grace period 0, and only if the
// object is still the pod this worker ran.
func deletePodObject(ctx context.Context, client kubernetes.Interface, key types.NamespacedName, uid types.UID) error {
	err := client.CoreV1().Pods(key.Namespace).Delete(ctx, key.Name, metav1.DeleteOptions{
		GracePeriodSeconds: ptr.To[int64](0),
		Preconditions:      &metav1.Preconditions{UID: &uid},
	})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil
	}
	return err
}

// snapshot is the worker's runtime state for status computation.
func (w *podWorker) snapshot() podSnapshot {
	w.mu.Lock()
	snap := podSnapshot{
		HostIP:       w.k.cfg.NodeIP.String(),
		HostIPv6:     ipString(w.k.cfg.NodeIPv6),
		PodIP:        w.podIP,
		PodIPv6:      w.podIPv6,
		NetworkReady: w.networkReady,
		StartTime:    w.startTime,
	}
	if w.evicted {
		snap.Evicted = w.evictMessage
	}
	containers, inits := w.containers, w.initContainers
	w.mu.Unlock()
	for _, c := range containers {
		snap.Containers = append(snap.Containers, c.snapshot(string(w.uid)))
	}
	for _, c := range inits {
		snap.InitContainers = append(snap.InitContainers, c.snapshot(string(w.uid)))
	}
	return snap
}

// syncStatus writes the pod's status if it differs from what the API has.
func (w *podWorker) syncStatus(ctx context.Context) {
	snap := w.snapshot()
	if len(snap.Containers) == 0 && !snap.NetworkReady {
		return
	}
	pod, err := writePodStatus(ctx, w.k.client, w.currentPod(), w.uid, func(p *corev1.Pod) corev1.PodStatus {
		return computePodStatus(p, snap, metav1.NewTime(time.Now()))
	})
	if err != nil {
		if ctx.Err() == nil {
			w.log.Error(err, "Updating pod status failed")
		}
		return
	}
	if pod != nil {
		// Keep the written version unless the informer already delivered a newer one, so that the next
		// update does not start from a stale resourceVersion.
		w.mu.Lock()
		if newerResourceVersion(pod.ResourceVersion, w.pod.ResourceVersion) {
			w.pod = pod
		}
		w.mu.Unlock()
	}
}

// newerResourceVersion compares two resourceVersions from the same API server (etcd revisions).
func newerResourceVersion(a, b string) bool {
	x, errA := strconv.ParseUint(a, 10, 64)
	y, errB := strconv.ParseUint(b, 10, 64)
	return errA == nil && errB == nil && x > y
}

// writePodStatus updates the status computed from the pod's newest version, if it changed; on a conflict it
// reads the pod again. It returns the updated pod, or nil when nothing was written.
func writePodStatus(ctx context.Context, client kubernetes.Interface, pod *corev1.Pod, uid types.UID,
	compute func(*corev1.Pod) corev1.PodStatus) (*corev1.Pod, error) {
	var updated *corev1.Pod
	first := true
	err := retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		if !first {
			fresh, err := client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			pod = fresh
		}
		first = false
		if pod.UID != uid {
			return nil
		}
		status := compute(pod)
		if apiequality.Semantic.DeepEqual(status, pod.Status) {
			return nil
		}
		next := pod.DeepCopy()
		next.Status = status
		out, err := client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, next, metav1.UpdateOptions{})
		if err != nil {
			return err
		}
		updated = out
		return nil
	})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	return updated, err
}

// startServiceAccountToken keeps the pod's ServiceAccount token files fresh when the pod mounts one.
func (w *podWorker) startServiceAccountToken(ctx context.Context) {
	pod := w.currentPod()
	automount, err := w.k.automountToken(ctx, pod)
	if err != nil {
		w.log.Error(err, "Reading service account, assuming automount")
	}
	if !automount {
		return
	}
	w.mu.Lock()
	w.needsToken = true
	w.mu.Unlock()
	go func() {
		backoff := wait.Backoff{Duration: time.Second, Factor: 2, Cap: 30 * time.Second, Steps: math.MaxInt32}
		for {
			next, err := w.refreshToken(ctx)
			delay := time.Until(next)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				w.log.Error(err, "Service account token refresh failed")
				delay = backoff.Step()
			} else {
				backoff = wait.Backoff{Duration: time.Second, Factor: 2, Cap: 30 * time.Second, Steps: math.MaxInt32}
			}
			if !sleepCtx(ctx, delay) {
				return
			}
		}
	}()
}

func (w *podWorker) refreshToken(ctx context.Context) (time.Time, error) {
	issued := time.Now()
	status, err := requestToken(ctx, w.k.client, w.currentPod())
	if err != nil {
		return time.Time{}, err
	}
	if err := writeServiceAccountFiles(w.files, w.k.access, w.key.Namespace, status.Token); err != nil {
		return time.Time{}, err
	}
	w.mu.Lock()
	first := !w.tokenWritten
	w.tokenWritten = true
	w.mu.Unlock()
	if first {
		w.log.Info("Service account token written", "serviceAccount", serviceAccountName(w.currentPod()), "kubeconfig", w.files.Kubeconfig)
	}
	return refreshAt(issued, status.ExpirationTimestamp.Time), nil
}

var errTokenPending = errors.New("waiting for the service account token")

// startContainers runs the init containers one after the other, each until it succeeds (retried with
// backoff, as with restartPolicy Always), then starts a supervisor for every container, as the kubelet does.
// A sidecar (an init container with restartPolicy Always) is started in its turn, supervised like a
// container, and the next one waits until it has started (past its startup probe).
// The init containers run at every start of the worker, also after a kubelet restart (a real kubelet runs
// them again whenever it makes a new pod sandbox).
func (w *podWorker) startContainers(ctx context.Context) {
	pod := w.currentPod()
	previous := map[string]corev1.ContainerStatus{}
	for _, cs := range pod.Status.ContainerStatuses {
		previous[cs.Name] = cs
	}
	for _, cs := range pod.Status.InitContainerStatuses {
		previous[cs.Name] = cs
	}
	inits := make([]*container, 0, len(pod.Spec.InitContainers))
	for i := range pod.Spec.InitContainers {
		spec := pod.Spec.InitContainers[i]
		if spec.RestartPolicy != nil && *spec.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			c := w.longRunning(spec, previous, "initContainer")
			c.sidecar = true
			inits = append(inits, c)
			continue
		}
		kind, mapping := classifyImage(spec.Image, w.k.cfg.EchoImage, w.k.cfg.ImageMap)
		c := &container{spec: spec, kind: kind, mapping: mapping, log: w.log.WithValues("initContainer", spec.Name)}
		c.sup = newSupervisor(c.log, 0, w.k.cfg.KillGracePeriod,
			func(ctx context.Context) (processSpec, error) { return w.processSpec(ctx, c) }, nil, w.requestStatusSync)
		c.sup.untilSuccess = true
		inits = append(inits, c)
	}
	containers := make([]*container, 0, len(pod.Spec.Containers))
	for i := range pod.Spec.Containers {
		containers = append(containers, w.longRunning(pod.Spec.Containers[i], previous, "container"))
	}
	w.mu.Lock()
	w.initContainers = inits
	w.containers = containers
	w.mu.Unlock()
	w.containersRun.Go(func() {
		for _, c := range inits {
			if c.sidecar {
				w.containersRun.Go(func() { c.sup.Run(ctx) })
				err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(context.Context) (bool, error) {
					return c.started() || c.sup.isTerminating(), nil
				})
				if err != nil || c.sup.isTerminating() {
					return // the pod is stopping: the containers never start
				}
				continue
			}
			c.sup.Run(ctx)
			if !c.sup.State().Succeeded {
				return // the pod is stopping: the containers never start
			}
		}
		for _, c := range containers {
			w.containersRun.Go(func() { c.sup.Run(ctx) })
		}
	})
}

// longRunning is a container the worker keeps running (restartPolicy Always), with its probes: a pod's
// container or a sidecar. A kubelet restart killed its previous process: that counts as a restart.
func (w *podWorker) longRunning(spec corev1.Container, previous map[string]corev1.ContainerStatus, kindKey string) *container {
	kind, mapping := classifyImage(spec.Image, w.k.cfg.EchoImage, w.k.cfg.ImageMap)
	c := &container{spec: spec, kind: kind, mapping: mapping, log: w.log.WithValues(kindKey, spec.Name)}
	restarts := int32(0)
	if prev, ok := previous[spec.Name]; ok {
		restarts = prev.RestartCount
		if prev.State.Running != nil {
			restarts++
		}
	}
	c.sup = newSupervisor(c.log, restarts, w.k.cfg.KillGracePeriod,
		func(ctx context.Context) (processSpec, error) { return w.processSpec(ctx, c) },
		func(procCtx context.Context, _ int) {
			c.resetForStart()
			w.requestStatusSync()
			c.runProbes(procCtx, w.probeTarget(c), w.requestStatusSync)
		},
		w.requestStatusSync)
	return c
}

// processSpec is what to run for container c now.
func (w *podWorker) processSpec(ctx context.Context, c *container) (processSpec, error) {
	pod := w.currentPod()
	// The first token is normally written within a round trip of the network setup: wait for it rather
	// than report a failed start.
	_ = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		w.mu.Lock()
		defer w.mu.Unlock()
		return !w.needsToken || w.tokenWritten, nil
	})
	w.mu.Lock()
	podIP, podIPv6, needsToken, tokenWritten := w.podIP, w.podIPv6, w.needsToken, w.tokenWritten
	w.mu.Unlock()
	if needsToken && !tokenWritten {
		return processSpec{}, errTokenPending
	}
	hostname := pod.Name
	if w.hostNetwork {
		hostname = w.k.cfg.NodeName
	}
	base := []corev1.EnvVar{
		{Name: "PATH", Value: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		{Name: "HOME", Value: "/root"},
		{Name: "HOSTNAME", Value: hostname},
	}
	services, err := w.k.serviceList()
	if err != nil {
		return processSpec{}, err
	}
	base = append(base, podServiceEnv(pod, services, w.k.access)...)
	if needsToken {
		base = append(base, corev1.EnvVar{Name: "KUBECONFIG", Value: w.files.Kubeconfig})
	}
	env, vars, err := renderEnv(ctx, pod, &c.spec, podRuntimeInfo{
		PodIP: podIP, HostIP: w.k.cfg.NodeIP.String(), PodIPv6: podIPv6, HostIPv6: ipString(w.k.cfg.NodeIPv6), Allocatable: w.k.facts.capacity(), Base: base,
	}, w.k.envSource)
	if err != nil {
		return processSpec{}, err
	}
	var argv []string
	switch c.kind {
	case kindMappedBinary:
		if argv, err = mappedArgv(c.mapping, &c.spec, vars); err != nil {
			return processSpec{}, err
		}
		var files *serviceAccountFiles
		if needsToken {
			files = &w.files
		}
		if err := w.writeConfigMapVolumes(ctx, pod); err != nil {
			return processSpec{}, err
		}
		if err := createHostPathFiles(pod); err != nil {
			return processSpec{}, err
		}
		binds, skipped := containerMounts(pod, &c.spec, w.dir, files)
		if len(skipped) > 0 {
			c.log.Info("Volume mounts not provided by the lab kubelet", "volumes", skipped)
		}
		sec := securityFor(c.spec.SecurityContext)
		if !w.hostNetwork {
			sec.Hostname = podHostname(pod)
		}
		argv = containerArgv(w.k.cfg.LabvmBinary, binds, &sec, argv)
	default:
		tcp, udp, sctp := echoPorts(&c.spec)
		argv = echoArgv(w.k.cfg.LabvmBinary, pod.Name, tcp, udp, sctp)
	}
	if !w.hostNetwork {
		argv = w.k.netns.ExecArgv(w.netns, argv)
	}
	dir, err := prepareWritableDir(w.dir, &c.spec)
	if err != nil {
		return processSpec{}, err
	}
	return processSpec{
		Argv:    argv,
		Env:     env,
		Dir:     dir,
		LogPath: containerLogPath(w.k.cfg.PodLogDir, pod, c.spec.Name),
	}, nil
}

// probeTarget is where c's probes go: the pod IP, or the node IP for host-network pods.
func (w *podWorker) probeTarget(c *container) probeTarget {
	w.mu.Lock()
	ip := w.podIP
	w.mu.Unlock()
	return probeTarget{
		IP:    ip,
		Ports: c.spec.Ports,
		Exec: func(ctx context.Context, argv []string) error {
			if !w.hostNetwork {
				argv = w.k.netns.ExecArgv(w.netns, argv)
			}
			return runCommand(ctx, argv)
		},
	}
}
