package kubelet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/vishvananda/netns"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/workqueue"
)

// Kubelet runs the pods bound to one lab node.
type Kubelet struct {
	cfg       Config
	log       logr.Logger
	client    kubernetes.Interface
	access    clusterAccess
	facts     nodeFacts
	ipam      *IPAM
	netns     *netnsManager
	network   *podNetwork
	records   netnsRecords
	envSource envSource
	pods      corelisters.PodLister
	services  corelisters.ServiceLister
	queue     workqueue.TypedRateLimitingInterface[types.NamespacedName]

	mu      sync.Mutex
	workers map[types.NamespacedName]*podWorker
	// finished remembers pods whose worker is done, so that the informer's copy, which lags behind the
	// deletion, does not start them again.
	finished map[types.NamespacedName]types.UID
	running  sync.WaitGroup
}

// Run registers the node and runs its pods until ctx ends; then it stops the pods' processes and returns.
func Run(ctx context.Context, cfg Config) error {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	log := logr.FromContextOrDiscard(ctx).WithValues("node", cfg.NodeName)
	if err := linkEntrypoints(cfg.ImageMap); err != nil {
		return fmt.Errorf("linking image entrypoints: %w", err)
	}
	restConfig, err := clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
	if err != nil {
		return fmt.Errorf("loading kubeconfig %s: %w", cfg.Kubeconfig, err)
	}
	restConfig.UserAgent = "lab-kubelet/" + cfg.NodeName
	access, err := clusterAccessFrom(restConfig, cfg.APIServer)
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(restConfig)
	if err != nil {
		return err
	}
	ipam, err := NewIPAM(cfg.PodCIDR)
	if err != nil {
		return err
	}
	mounts, err := startMountNamespaceRunner(ctx, cfg.HostMountNamespace)
	if err != nil {
		return err
	}
	nodeNS, err := netns.Get()
	if err != nil {
		return fmt.Errorf("opening the node's network namespace: %w", err)
	}
	defer nodeNS.Close()

	return newKubelet(cfg, log, client, access, ipam, mounts, nodeNS).run(ctx)
}

// newKubelet wires a kubelet from its parts (tests pass a fake clientset).
func newKubelet(cfg Config, log logr.Logger, client kubernetes.Interface, access clusterAccess, ipam *IPAM,
	mounts *mountNamespaceRunner, nodeNS netns.NsHandle) *Kubelet {
	return &Kubelet{
		cfg:       cfg,
		log:       log,
		client:    client,
		access:    access,
		facts:     localNodeFacts(cfg),
		ipam:      ipam,
		netns:     &netnsManager{ipCommand: cfg.IPCommand, dir: cfg.NetnsDir, prefix: cfg.NetnsPrefix, mounts: mounts},
		network:   &podNetwork{node: nodeNS, bridge: cfg.Bridge, cidr: cfg.PodCIDR, cidr6: cfg.PodCIDRv6},
		records:   netnsRecords{dir: filepath.Join(cfg.StateDir, "netns")},
		envSource: apiEnvSource{client: client},
		workers:   map[types.NamespacedName]*podWorker{},
		finished:  map[types.NamespacedName]types.UID{},
	}
}

// clusterAccessFrom takes the API server URL and CA for pods from the kubelet's own kubeconfig.
func clusterAccessFrom(c *rest.Config, serverOverride string) (clusterAccess, error) {
	a := clusterAccess{Server: c.Host, CAData: c.CAData, Insecure: c.Insecure}
	if serverOverride != "" {
		a.Server = serverOverride
	}
	if len(a.CAData) == 0 && c.CAFile != "" {
		data, err := os.ReadFile(c.CAFile)
		if err != nil {
			return a, fmt.Errorf("reading the cluster CA: %w", err)
		}
		a.CAData = data
	}
	return a, nil
}

func (k *Kubelet) run(ctx context.Context) error {
	registrar := &nodeRegistrar{client: k.client, facts: k.facts, log: k.log, now: time.Now}
	// The API server may still be starting: keep trying.
	err := wait.PollUntilContextCancel(ctx, 2*time.Second, true, func(ctx context.Context) (bool, error) {
		if err := registrar.Register(ctx); err != nil {
			k.log.Error(err, "Registering node failed, retrying")
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("registering node: %w", err)
	}
	k.log.Info("Node registered", "podCIDR", k.cfg.PodCIDR.String(), "nodeIP", k.cfg.NodeIP.String())
	go registrar.RunHeartbeats(ctx, k.cfg.HeartbeatInterval)

	factory := informers.NewSharedInformerFactoryWithOptions(k.client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", k.cfg.NodeName).String()
		}))
	podInformer := factory.Core().V1().Pods()
	k.pods = podInformer.Lister()
	k.queue = workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[types.NamespacedName](),
		workqueue.TypedRateLimitingQueueConfig[types.NamespacedName]{Name: "lab-kubelet-pods"})
	enqueue := func(obj any) {
		if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = tomb.Obj
		}
		if pod, ok := obj.(*corev1.Pod); ok {
			k.queue.Add(types.NamespacedName{Namespace: pod.Namespace, Name: pod.Name})
		}
	}
	if _, err := podInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
		DeleteFunc: enqueue,
	}); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), podInformer.Informer().HasSynced) {
		return ctx.Err()
	}
	// The kubelet does not start pods before it knows the Services their environment names.
	stopServices, err := k.watchServices(ctx)
	if err != nil {
		return err
	}
	defer stopServices()
	k.adoptAddresses()
	k.cleanUpOrphans(ctx)
	if k.cfg.Serve.Address != "" {
		k.running.Go(func() {
			if err := serveAPI(ctx, k.cfg.Serve, k, k.log); err != nil {
				k.log.Error(err, "Kubelet API failed: exec, logs and port-forward are not available")
			}
		})
	}

	var workers sync.WaitGroup
	for range 2 {
		workers.Go(func() {
			for k.processNext(ctx) {
			}
		})
	}
	k.log.Info("Lab kubelet running")
	<-ctx.Done()
	k.queue.ShutDown()
	workers.Wait()
	k.running.Wait()
	k.log.Info("Lab kubelet stopped")
	return nil
}

// adoptAddresses rebuilds the IP allocations from the pods' reported addresses after a restart.
func (k *Kubelet) adoptAddresses() {
	pods, err := k.pods.List(labels.Everything())
	if err != nil {
		return
	}
	for _, pod := range pods {
		if pod.Spec.HostNetwork || pod.Status.PodIP == "" {
			continue
		}
		if err := k.ipam.Reserve(string(pod.UID), net.ParseIP(pod.Status.PodIP)); err != nil {
			k.log.Info("Not keeping a pod's previous address", "pod", pod.Namespace+"/"+pod.Name, "ip", pod.Status.PodIP, "reason", err.Error())
		}
	}
}

// cleanUpOrphans removes the network namespaces this kubelet made for pods that no longer exist (deleted while
// it was down), and their per-pod directories.
func (k *Kubelet) cleanUpOrphans(ctx context.Context) {
	pods, err := k.pods.List(labels.Everything())
	if err != nil {
		return
	}
	wanted := map[string]types.UID{}
	dirs := sets.New[string]()
	for _, pod := range pods {
		dirs.Insert(filepath.Base(podDir(k.cfg.PodDir, pod)))
		if !pod.Spec.HostNetwork {
			wanted[netnsName(k.cfg.NetnsPrefix, pod)] = pod.UID
		}
	}
	records, err := k.records.All()
	if err != nil {
		k.log.Error(err, "Reading network namespace records failed")
	}
	for name, uid := range records {
		if wanted[name] == uid {
			continue
		}
		k.log.Info("Removing network namespace of a deleted pod", "netns", name, "uid", string(uid))
		if err := k.tearDownNetns(ctx, name); err != nil {
			k.log.Error(err, "Removing orphaned network namespace failed", "netns", name)
		}
	}
	entries, _ := os.ReadDir(k.cfg.PodDir)
	for _, e := range entries {
		if !dirs.Has(e.Name()) {
			_ = os.RemoveAll(filepath.Join(k.cfg.PodDir, e.Name()))
		}
	}
}

// tearDownNetns removes a pod's veth and network namespace and forgets it.
func (k *Kubelet) tearDownNetns(ctx context.Context, name string) error {
	var errs []error
	if err := k.network.Teardown(hostVethName(name)); err != nil {
		errs = append(errs, err)
	}
	if err := k.removePodEtc(name); err != nil {
		errs = append(errs, err)
	}
	if err := k.netns.Delete(ctx, name); err != nil {
		errs = append(errs, err)
	} else if err := k.records.Forget(name); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (k *Kubelet) processNext(ctx context.Context) bool {
	key, shutdown := k.queue.Get()
	if shutdown {
		return false
	}
	defer k.queue.Done(key)
	if requeue := k.syncPod(ctx, key); requeue > 0 {
		k.queue.AddAfter(key, requeue)
		return true
	}
	k.queue.Forget(key)
	return true
}

// syncPod makes the node's runtime follow the pod: start a worker for a new pod, hand updates to its worker,
// and stop workers whose pod is gone. It returns a delay after which to look again, or 0.
func (k *Kubelet) syncPod(ctx context.Context, key types.NamespacedName) time.Duration {
	pod, err := k.pods.Pods(key.Namespace).Get(key.Name)
	if err != nil && !apierrors.IsNotFound(err) {
		k.log.Error(err, "Reading pod from cache failed", "pod", key.String())
		return time.Second
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	w := k.workers[key]
	if pod == nil {
		delete(k.finished, key)
		if w != nil {
			w.abort()
		}
		return 0
	}
	if w == nil && k.finished[key] == pod.UID {
		return 0
	}
	if w != nil && w.uid != pod.UID {
		// A new pod under the same name: the old one's network namespace must be gone first.
		w.abort()
		return 500 * time.Millisecond
	}
	if w == nil {
		if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			// A terminal pod runs nothing here; once deleted, its object goes as soon as the kubelet sees it
			// (an evicted pod left over from before a kubelet restart).
			if pod.DeletionTimestamp != nil {
				if err := deletePodObject(ctx, k.client, key, pod.UID); err != nil {
					k.log.Error(err, "Deleting terminal pod failed", "pod", key.String())
					return time.Second
				}
			}
			return 0
		}
		w = newPodWorker(k, pod)
		k.workers[key] = w
		k.log.Info("Starting pod", "pod", key.String(), "uid", string(pod.UID), "hostNetwork", pod.Spec.HostNetwork)
		k.running.Go(func() {
			w.run(ctx)
			k.workerDone(w)
		})
	}
	w.observe(pod)
	return 0
}

func (k *Kubelet) workerDone(w *podWorker) {
	k.mu.Lock()
	if k.workers[w.key] == w {
		delete(k.workers, w.key)
	}
	if w.terminated() {
		k.finished[w.key] = w.uid
	}
	k.mu.Unlock()
	if !k.queue.ShuttingDown() {
		k.queue.Add(w.key) // a pod recreated under the same name may be waiting
	}
}

// automountToken tells whether the pod gets a ServiceAccount token: the pod's setting wins, then the
// ServiceAccount's, then yes.
func (k *Kubelet) automountToken(ctx context.Context, pod *corev1.Pod) (bool, error) {
	if pod.Spec.AutomountServiceAccountToken != nil {
		return *pod.Spec.AutomountServiceAccountToken, nil
	}
	sa, err := k.client.CoreV1().ServiceAccounts(pod.Namespace).Get(ctx, serviceAccountName(pod), metav1.GetOptions{})
	if err != nil {
		return true, err
	}
	if sa.AutomountServiceAccountToken != nil {
		return *sa.AutomountServiceAccountToken, nil
	}
	return true, nil
}

// apiEnvSource reads ConfigMaps and Secrets for env vars from the API server.
type apiEnvSource struct{ client kubernetes.Interface }

func (s apiEnvSource) ConfigMap(ctx context.Context, namespace, name string) (map[string]string, error) {
	cm, err := s.client.CoreV1().ConfigMaps(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for k, v := range cm.Data {
		out[k] = v
	}
	for k, v := range cm.BinaryData {
		out[k] = string(v)
	}
	return out, nil
}

func (s apiEnvSource) Secret(ctx context.Context, namespace, name string) (map[string]string, error) {
	secret, err := s.client.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for k, v := range secret.Data {
		out[k] = string(v)
	}
	for k, v := range secret.StringData {
		out[k] = v
	}
	return out, nil
}

// runCommand runs argv (exec probes) and fails on a non-zero exit, with the output in the error.
func runCommand(ctx context.Context, argv []string) error {
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}
