package kubelet

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
)

// maxPods is the node's pod capacity (the kubelet's default).
const maxPods = 110

// leaseDuration is the node Lease's duration, as the kubelet's (40 s).
const leaseDuration = 40 * time.Second

// nodeFacts are what the Node object says about this node.
type nodeFacts struct {
	Name          string
	IP            string
	PodCIDR       string
	CPU           int
	MemoryBytes   int64
	KernelVersion string
	OSImage       string
	Arch          string
	// KubeletIP and KubeletPort are where kube-apiserver reaches the kubelet API (0: not served).
	KubeletIP   string
	KubeletPort int32
	// IPv6 and PodCIDRv6 are a dual-stack node's second family ("" otherwise).
	IPv6, PodCIDRv6 string
}

// localNodeFacts reads the machine's CPU count, memory and kernel version.
func localNodeFacts(cfg Config) nodeFacts {
	f := nodeFacts{
		Name: cfg.NodeName, IP: cfg.NodeIP.String(), PodCIDR: cfg.PodCIDR.String(), IPv6: ipString(cfg.NodeIPv6),
		CPU: runtime.NumCPU(), MemoryBytes: memTotal(), Arch: runtime.GOARCH, OSImage: "ipvs-operator lab VM",
	}
	if cfg.AdvertiseAddress != "" {
		f.KubeletIP, f.KubeletPort, _ = advertisedEndpoint(cfg.AdvertiseAddress) // checked by Validate
	}
	if cfg.PodCIDRv6 != nil {
		f.PodCIDRv6 = cfg.PodCIDRv6.String()
	}
	if cfg.NoNodePodCIDR {
		f.PodCIDR, f.PodCIDRv6 = "", "" // applyNodeSpec then leaves spec.podCIDRs alone
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		f.KernelVersion = strings.TrimSpace(string(b))
	}
	return f
}

func memTotal() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) >= 2 && fields[0] == "MemTotal:" {
			kb, _ := strconv.ParseInt(fields[1], 10, 64)
			return kb * 1024
		}
	}
	return 0
}

func (f nodeFacts) capacity() corev1.ResourceList {
	return corev1.ResourceList{
		corev1.ResourceCPU:              *resource.NewQuantity(int64(f.CPU), resource.DecimalSI),
		corev1.ResourceMemory:           *resource.NewQuantity(f.MemoryBytes, resource.BinarySI),
		corev1.ResourcePods:             *resource.NewQuantity(maxPods, resource.DecimalSI),
		corev1.ResourceEphemeralStorage: resource.MustParse("10Gi"),
	}
}

// desiredNodeLabels are the labels the kubelet puts on its Node.
func desiredNodeLabels(f nodeFacts) map[string]string {
	return map[string]string{
		corev1.LabelHostname:   f.Name,
		corev1.LabelOSStable:   "linux",
		corev1.LabelArchStable: f.Arch,
	}
}

// applyNodeSpec makes node carry the kubelet's labels and pod CIDR (which is immutable once set).
func applyNodeSpec(node *corev1.Node, f nodeFacts) error {
	if node.Labels == nil {
		node.Labels = map[string]string{}
	}
	for k, v := range desiredNodeLabels(f) {
		node.Labels[k] = v
	}
	if f.PodCIDR == "" {
		return nil
	}
	if node.Spec.PodCIDR == "" {
		node.Spec.PodCIDR = f.PodCIDR
		node.Spec.PodCIDRs = []string{f.PodCIDR}
		if f.PodCIDRv6 != "" {
			node.Spec.PodCIDRs = append(node.Spec.PodCIDRs, f.PodCIDRv6)
		}
	} else if node.Spec.PodCIDR != f.PodCIDR {
		return fmt.Errorf("node %s already has pod CIDR %s, not %s", node.Name, node.Spec.PodCIDR, f.PodCIDR)
	}
	return nil
}

// applyNodeStatus sets the status a healthy kubelet reports, with a fresh heartbeat.
func applyNodeStatus(status *corev1.NodeStatus, f nodeFacts, now metav1.Time) {
	status.Capacity = f.capacity()
	status.Allocatable = f.capacity()
	status.Addresses = []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: f.IP},
		{Type: corev1.NodeHostName, Address: f.Name},
	}
	if f.IPv6 != "" {
		status.Addresses = slices.Insert(status.Addresses, 1, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: f.IPv6})
	}
	kubeletPort := int32(10250)
	if f.KubeletPort != 0 {
		// The host reaches the kubelet API only through the VM's port forward on its loopback: say so as
		// an ExternalIP, which kube-apiserver prefers (--kubelet-preferred-address-types).
		status.Addresses = append(status.Addresses, corev1.NodeAddress{Type: corev1.NodeExternalIP, Address: f.KubeletIP})
		kubeletPort = f.KubeletPort
	}
	status.NodeInfo = corev1.NodeSystemInfo{
		KubeletVersion:          KubeletVersion,
		OperatingSystem:         "linux",
		Architecture:            f.Arch,
		KernelVersion:           f.KernelVersion,
		OSImage:                 f.OSImage,
		ContainerRuntimeVersion: "lab://" + KubeletVersion,
		MachineID:               f.Name,
		SystemUUID:              f.Name,
		BootID:                  f.Name,
	}
	status.DaemonEndpoints = corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: kubeletPort}}
	conds := []struct {
		t       corev1.NodeConditionType
		s       corev1.ConditionStatus
		reason  string
		message string
	}{
		{corev1.NodeReady, corev1.ConditionTrue, "KubeletReady", "lab kubelet is posting ready status"},
		{corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory", "kubelet has sufficient memory available"},
		{corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure", "kubelet has no disk pressure"},
		{corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID", "kubelet has sufficient PID available"},
	}
	for _, want := range conds {
		found := false
		for i := range status.Conditions {
			c := &status.Conditions[i]
			if c.Type != want.t {
				continue
			}
			found = true
			if c.Status != want.s {
				c.LastTransitionTime = now
			}
			c.Status, c.Reason, c.Message, c.LastHeartbeatTime = want.s, want.reason, want.message, now
		}
		if !found {
			status.Conditions = append(status.Conditions, corev1.NodeCondition{
				Type: want.t, Status: want.s, Reason: want.reason, Message: want.message,
				LastHeartbeatTime: now, LastTransitionTime: now,
			})
		}
	}
}

// nodeRegistrar keeps the Node object and its Lease up to date.
type nodeRegistrar struct {
	client kubernetes.Interface
	facts  nodeFacts
	log    logr.Logger
	now    func() time.Time
}

// Register creates or updates the Node (labels, pod CIDR) and posts its status.
func (r *nodeRegistrar) Register(ctx context.Context) error {
	nodes := r.client.CoreV1().Nodes()
	_, err := nodes.Get(ctx, r.facts.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: r.facts.Name}}
		if err := applyNodeSpec(node, r.facts); err != nil {
			return err
		}
		if _, err = nodes.Create(ctx, node, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating node: %w", err)
		}
	} else if err != nil {
		return fmt.Errorf("reading node: %w", err)
	}
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		node, err := nodes.Get(ctx, r.facts.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		before := node.DeepCopy()
		if err := applyNodeSpec(node, r.facts); err != nil {
			return err
		}
		if !equalNodeMeta(before, node) {
			_, err = nodes.Update(ctx, node, metav1.UpdateOptions{})
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("updating node: %w", err)
	}
	return r.Heartbeat(ctx)
}

func equalNodeMeta(a, b *corev1.Node) bool {
	if a.Spec.PodCIDR != b.Spec.PodCIDR || len(a.Labels) != len(b.Labels) {
		return false
	}
	for k, v := range a.Labels {
		if b.Labels[k] != v {
			return false
		}
	}
	return true
}

// Heartbeat posts the node status (Ready, with a new heartbeat time) and renews the node Lease.
func (r *nodeRegistrar) Heartbeat(ctx context.Context) error {
	now := metav1.NewTime(r.now())
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		node, err := r.client.CoreV1().Nodes().Get(ctx, r.facts.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		applyNodeStatus(&node.Status, r.facts, now)
		_, err = r.client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("posting node status: %w", err)
	}
	return r.renewLease(ctx, now)
}

func (r *nodeRegistrar) renewLease(ctx context.Context, now metav1.Time) error {
	leases := r.client.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	renew := metav1.NewMicroTime(now.Time)
	lease, err := leases.Get(ctx, r.facts.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		lease = &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: r.facts.Name, Namespace: corev1.NamespaceNodeLease},
			Spec: coordinationv1.LeaseSpec{
				HolderIdentity:       ptr.To(r.facts.Name),
				LeaseDurationSeconds: ptr.To(int32(leaseDuration / time.Second)),
				RenewTime:            &renew,
			},
		}
		// The owner reference lets the garbage collector remove the Lease with the Node.
		if node, err := r.client.CoreV1().Nodes().Get(ctx, r.facts.Name, metav1.GetOptions{}); err == nil {
			lease.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID}}
		}
		if _, err := leases.Create(ctx, lease, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating node lease: %w", err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading node lease: %w", err)
	}
	lease.Spec.RenewTime = &renew
	lease.Spec.HolderIdentity = ptr.To(r.facts.Name)
	if _, err := leases.Update(ctx, lease, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("renewing node lease: %w", err)
	}
	return nil
}

// RunHeartbeats posts status every interval until ctx ends; failures are logged and retried next period.
func (r *nodeRegistrar) RunHeartbeats(ctx context.Context, interval time.Duration) {
	wait.UntilWithContext(ctx, func(ctx context.Context) {
		if err := r.Heartbeat(ctx); err != nil && ctx.Err() == nil {
			r.log.Error(err, "Node heartbeat failed")
		}
	}, interval)
}
