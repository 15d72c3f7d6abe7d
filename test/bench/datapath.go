//go:build lab

package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ipvs-operator/ipvs-operator/test/lab"
	"github.com/ipvs-operator/ipvs-operator/test/lab/topology"
)

// The data path is measured through one more Service, outside the bench's VIP range (so the full-state
// watch does not count it) and with real backends: echo pods on the other lab node, requested by a client
// pod on the proxy's node, so every request crosses the proxy's translation of a ClusterIP while all the
// bench's Services are programmed next to it.
var dataPathVIP = "10.96.32.1"

const (
	dataPathService  = "datapath"
	dataPathBackends = 2
	echoPort         = 8080
)

// DataPath is what `benchvm conns` measured through one address: requests made one after the other, each
// on a new TCP connection.
type DataPath struct {
	Requests, Errors int
	Seconds          float64
	Latencies        []time.Duration
	FirstError       string
}

// Rate is connections (requests) per second that succeeded.
func (d DataPath) Rate() float64 {
	if d.Seconds <= 0 {
		return 0
	}
	return float64(len(d.Latencies)) / d.Seconds
}

// dataPathPods are the client pod (on the proxy's node) and the backends' addresses.
type dataPathPods struct {
	client   types.NamespacedName
	backends []string
}

// echoPod is a pod of the lab's echo server on node, ready when it answers GET /readyz.
func echoPod(name, node string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: map[string]string{"bench": "datapath"}},
		Spec: corev1.PodSpec{
			// Not one environment variable per Service of the namespace: at 10,000 Services the kubelet's
			// service links made the pod unstartable.
			EnableServiceLinks:            ptr.To(false),
			NodeName:                      node,
			TerminationGracePeriodSeconds: ptr.To[int64](5),
			Containers: []corev1.Container{{
				Name: "echo", Image: lab.EchoImage, Command: []string{lab.GuestBin + "/labvm"},
				Args: []string{"echo", "--tcp=" + strconv.Itoa(echoPort)},
				Env: []corev1.EnvVar{{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{
					FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}},
				Ports: []corev1.ContainerPort{{Name: "tcp", ContainerPort: echoPort, Protocol: corev1.ProtocolTCP}},
				ReadinessProbe: &corev1.Probe{
					ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromInt32(echoPort)}},
					PeriodSeconds: 1,
				},
			}},
		},
	}
}

// otherNode is a lab node that is not node.
func otherNode(node string) string {
	for _, n := range topology.Nodes {
		if n.Name != node {
			return n.Name
		}
	}
	return node
}

// setupDataPath starts the pods, writes the Service and its EndpointSlice, and measures the limit: the
// client straight to one backend's pod address, with no Service in between.
func (h *Harness) setupDataPath(ctx context.Context) error {
	backendNode := otherNode(h.cfg.Node)
	pods := make([]*corev1.Pod, 0, 1+dataPathBackends)
	pods = append(pods, echoPod("dp-client", h.cfg.Node))
	for i := range dataPathBackends {
		pods = append(pods, echoPod(fmt.Sprintf("dp-backend-%d", i), backendNode))
	}
	for _, p := range pods {
		if err := h.c.Create(ctx, p); err != nil {
			return err
		}
	}
	for _, p := range pods {
		err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
			if err := h.c.Get(ctx, client.ObjectKeyFromObject(p), p); err != nil {
				return false, err
			}
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue && p.Status.PodIP != "" {
					return true, nil
				}
			}
			return false, nil
		})
		if err != nil {
			return fmt.Errorf("bench: pod %s not ready: %w", p.Name, err)
		}
	}
	h.dp = dataPathPods{client: client.ObjectKeyFromObject(pods[0])}
	eps := make([]discoveryv1.Endpoint, 0, dataPathBackends)
	for _, p := range pods[1:] {
		h.dp.backends = append(h.dp.backends, p.Status.PodIP)
		eps = append(eps, discoveryv1.Endpoint{Addresses: []string{p.Status.PodIP},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}, NodeName: ptr.To(backendNode)})
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: dataPathService},
		Spec: corev1.ServiceSpec{ClusterIP: dataPathVIP, Ports: []corev1.ServicePort{{Name: "tcp", Port: port,
			Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(echoPort)}}},
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: dataPathService + "-bench", Labels: map[string]string{
			discoveryv1.LabelServiceName: dataPathService,
			discoveryv1.LabelManagedBy:   "bench.ipvs-operator.dev",
		}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   eps,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("tcp"), Port: ptr.To[int32](echoPort), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	if err := h.c.Create(ctx, svc); err != nil {
		return err
	}
	if err := h.c.Create(ctx, slice); err != nil {
		return err
	}
	var err error
	h.DataPathLimit, err = h.conns(ctx, net.JoinHostPort(h.dp.backends[0], strconv.Itoa(echoPort)), h.cfg.DataPath)
	if err != nil {
		return err
	}
	h.logf("data path limit (client pod straight to a backend pod): %.0f connections/s, p50 %s, p99 %s",
		h.DataPathLimit.Rate(), dur(percentile(h.DataPathLimit.Latencies, 50)), dur(percentile(h.DataPathLimit.Latencies, 99)))
	return nil
}

// measureDataPath waits until the proxy serves the data path's ClusterIP (it may come last in its cold start),
// then measures it.
func (h *Harness) measureDataPath(ctx context.Context) (DataPath, error) {
	addr := net.JoinHostPort(dataPathVIP, strconv.Itoa(port))
	var probe DataPath
	err := wait.PollUntilContextTimeout(ctx, time.Second, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		var err error
		probe, err = h.conns(ctx, addr, 500*time.Millisecond)
		return err == nil && len(probe.Latencies) > 0 && probe.Errors == 0, err
	})
	if err != nil {
		return DataPath{}, fmt.Errorf("bench: %s not served from pod %s (last: %d ok, %d failed, %q): %w",
			addr, h.dp.client, len(probe.Latencies), probe.Errors, probe.FirstError, err)
	}
	return h.conns(ctx, addr, h.cfg.DataPath)
}

// conns runs `benchvm conns` in the client pod's network namespace.
func (h *Harness) conns(ctx context.Context, addr string, d time.Duration) (DataPath, error) {
	out, err := h.lab.Exec(ctx, lab.PodNetns(h.dp.client), lab.GuestBin+"/benchvm", "conns",
		"--duration", d.String(), "--timeout", "2s", addr)
	if err != nil {
		return DataPath{}, err
	}
	var r struct {
		Requests   int     `json:"requests"`
		Errors     int     `json:"errors"`
		Seconds    float64 `json:"seconds"`
		Latencies  []int64 `json:"latenciesMicros"`
		FirstError string  `json:"firstError"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		return DataPath{}, fmt.Errorf("bench: benchvm conns: %w: %s", err, out)
	}
	dp := DataPath{Requests: r.Requests, Errors: r.Errors, Seconds: r.Seconds, FirstError: r.FirstError}
	for _, us := range r.Latencies {
		dp.Latencies = append(dp.Latencies, time.Duration(us)*time.Microsecond)
	}
	return dp, nil
}
