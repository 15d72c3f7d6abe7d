package dataplane

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1alpha1 "github.com/ipvs-operator/ipvs-operator/api/v1alpha1"
)

// echoPort is a port an echo pod declares and serves.
type echoPort struct {
	name  string
	port  int32
	proto corev1.Protocol
}

var (
	httpPort  = echoPort{"http", 8080, corev1.ProtocolTCP}
	httpsPort = echoPort{"https", 8443, corev1.ProtocolTCP}
	udpPort   = echoPort{"dns", 5353, corev1.ProtocolUDP}
)

// echoPodSpec is a pod serving the echo server on ports, ready when GET :8080/readyz says so.
func echoPodSpec(drv Driver, ports ...echoPort) corev1.PodSpec {
	cports := make([]corev1.ContainerPort, 0, len(ports))
	var tcp, udp, sctp []string
	for _, p := range ports {
		cports = append(cports, corev1.ContainerPort{Name: p.name, ContainerPort: p.port, Protocol: p.proto})
		switch p.proto {
		case corev1.ProtocolUDP:
			udp = append(udp, strconv.Itoa(int(p.port)))
		case corev1.ProtocolSCTP:
			sctp = append(sctp, strconv.Itoa(int(p.port)))
		default:
			tcp = append(tcp, strconv.Itoa(int(p.port)))
		}
	}
	args := []string{"echo"}
	if len(tcp) > 0 {
		args = append(args, "--tcp="+strings.Join(tcp, ","))
	}
	if len(udp) > 0 {
		args = append(args, "--udp="+strings.Join(udp, ","))
	}
	if len(sctp) > 0 {
		args = append(args, "--sctp="+strings.Join(sctp, ","))
	}
	return corev1.PodSpec{
		// Longer than the echo server's shutdown delay after SIGTERM (test/lab/echo.DefaultShutdownDelay, 3 s),
		// so that a real kubelet (kind) lets it end by itself. The lab kubelet caps the grace at 3 s.
		TerminationGracePeriodSeconds: ptr.To[int64](5),
		Containers: []corev1.Container{{
			Name:    "echo",
			Image:   drv.Image(),
			Command: drv.ClientCommand()[:1],
			Args:    args,
			Env: []corev1.EnvVar{{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{
				FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}},
			Ports: cports,
			ReadinessProbe: &corev1.Probe{
				ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromInt32(httpPort.port)}},
				PeriodSeconds:    1,
				FailureThreshold: 1,
				SuccessThreshold: 1,
				TimeoutSeconds:   1,
			},
		}},
	}
}

// newNamespace creates a namespace for one spec and deletes it when the spec ends.
func newNamespace(ctx context.Context, drv Driver) string {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "dp-"}}
	Expect(drv.Client().Create(ctx, ns)).To(Succeed())
	DeferCleanup(func(ctx SpecContext) {
		Expect(client.IgnoreNotFound(drv.Client().Delete(ctx, ns))).To(Succeed())
	})
	return ns.Name
}

// echoDeployment creates a Deployment of echo pods labelled app=name, optionally pinned to one node.
func echoDeployment(ctx context.Context, drv Driver, ns, name string, replicas int32, node string, ports ...echoPort) {
	echoDeploymentWith(ctx, drv, ns, name, replicas, node, nil, ports...)
}

// echoDeploymentWith is echoDeployment with mutate applied to the pod spec first (nil: none).
func echoDeploymentWith(ctx context.Context, drv Driver, ns, name string, replicas int32, node string, mutate func(*corev1.PodSpec), ports ...echoPort) {
	labels := map[string]string{"app": name}
	spec := echoPodSpec(drv, ports...)
	if mutate != nil {
		mutate(&spec)
	}
	if node != "" {
		spec.NodeSelector = map[string]string{"kubernetes.io/hostname": node}
	}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: spec},
		},
	}
	Expect(drv.Client().Create(ctx, d)).To(Succeed())
}

// clientPod starts a standalone echo pod on node, used to send requests from inside the pod network.
func clientPod(ctx context.Context, drv Driver, ns, name, node string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"role": "client"}},
		Spec:       echoPodSpec(drv, httpPort),
	}
	p.Spec.NodeName = node
	Expect(drv.Client().Create(ctx, p)).To(Succeed())
	waitPodsReady(ctx, drv, ns, map[string]string{"role": "client"}, 1)
	Expect(drv.Client().Get(ctx, client.ObjectKeyFromObject(p), p)).To(Succeed())
	return p
}

// proxied marks a Service as ours: kube-proxy leaves Services with this label alone.
func proxied() map[string]string {
	return map[string]string{lbv1alpha1.ServiceProxyNameLabel: lbv1alpha1.ServiceProxyName}
}

// svcPort is a Service port; target may be a number or a container port's name.
func svcPort(name string, port int32, target intstr.IntOrString, proto corev1.Protocol) corev1.ServicePort {
	return corev1.ServicePort{Name: name, Port: port, TargetPort: target, Protocol: proto}
}

// newService creates a Service labelled for this proxy; selector nil makes a selector-less Service.
func newService(ctx context.Context, drv Driver, ns, name string, selector map[string]string, mutate func(*corev1.Service), ports ...corev1.ServicePort) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: withApp(proxied(), name)},
		Spec:       corev1.ServiceSpec{Selector: selector, Ports: ports},
	}
	if mutate != nil {
		mutate(s)
	}
	Expect(drv.Client().Create(ctx, s)).To(Succeed())
	Expect(s.Spec.ClusterIP).NotTo(BeEmpty(), "the API server allocates a ClusterIP")
	return s
}

// waitPodsReady waits until n pods matching labels are Ready, and returns them.
func waitPodsReady(ctx context.Context, drv Driver, ns string, labels map[string]string, n int) []corev1.Pod {
	var ready []corev1.Pod
	Eventually(ctx, func(g Gomega) {
		list := &corev1.PodList{}
		g.Expect(drv.Client().List(ctx, list, client.InNamespace(ns), client.MatchingLabels(labels))).To(Succeed())
		ready = ready[:0]
		for _, p := range list.Items {
			if p.DeletionTimestamp == nil && podReady(&p) {
				ready = append(ready, p)
			}
		}
		g.Expect(ready).To(HaveLen(n), "ready pods with labels %v", labels)
	}).WithTimeout(90 * time.Second).WithPolling(250 * time.Millisecond).Should(Succeed())
	return ready
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func podIPs(pods []corev1.Pod) []string {
	out := make([]string, len(pods))
	for i, p := range pods {
		out[i] = p.Status.PodIP
	}
	return out
}

func podNames(pods []corev1.Pod) []string {
	out := make([]string, len(pods))
	for i, p := range pods {
		out[i] = p.Name
	}
	return out
}

// handMadeSlice is an EndpointSlice a user writes for a selector-less Service.
func handMadeSlice(ns, service string, port int32, addrs ...string) *discoveryv1.EndpointSlice {
	eps := make([]discoveryv1.Endpoint, len(addrs))
	for i, a := range addrs {
		eps[i] = discoveryv1.Endpoint{Addresses: []string{a}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}
	}
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: service + "-manual", Labels: map[string]string{
			discoveryv1.LabelServiceName: service,
			discoveryv1.LabelManagedBy:   "e2e.ipvs-operator.dev",
		}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   eps,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To(port), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
}

// newPolicy creates a ServicePolicy selecting app=app with the given scheduler.
func newPolicy(ctx context.Context, drv Driver, ns, name, app string, sched lbv1alpha1.Scheduler) *lbv1alpha1.ServicePolicy {
	p := &lbv1alpha1.ServicePolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: lbv1alpha1.ServicePolicySpec{
			Selector:  &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}},
			Scheduler: sched,
		},
	}
	Expect(drv.Client().Create(ctx, p)).To(Succeed())
	return p
}

func hostPort(ip string, port int32) string {
	if strings.Contains(ip, ":") {
		return fmt.Sprintf("[%s]:%d", ip, port)
	}
	return fmt.Sprintf("%s:%d", ip, port)
}

// withApp adds app=name, which the scenarios' ServicePolicies select Services by.
func withApp(labels map[string]string, name string) map[string]string {
	labels["app"] = name
	return labels
}
