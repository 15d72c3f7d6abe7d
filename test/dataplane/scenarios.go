package dataplane

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1alpha1 "github.com/ipvs-operator/ipvs-operator/api/v1alpha1"
	"github.com/ipvs-operator/ipvs-operator/ipvs"
)

// Ports on every node that are no Service port: a test listener's in the host network, and the agent's
// metrics port (agentconfig.DefaultMetricsPort).
const (
	nodeListenerPort int32 = 9191
	agentMetricsPort int32 = 10271
)

// Where the operator runs the agent (config/default): used to restart an agent under load.
const (
	AgentNamespace = "ipvs-operator-system"
	agentLabel     = "app.kubernetes.io/name"
	agentLabelVal  = "ipvs-operator-agent"
)

// RegisterScenarios declares the dataplane specs. Call it at the top level of a suite; driver is called
// once the suite's BeforeSuite has built the cluster.
func RegisterScenarios(driver func() Driver) {
	var (
		drv   Driver
		nodeA string
		nodeB string
		ns    string
		cli   *corev1.Pod // a client pod on node B
	)
	BeforeEach(func(ctx SpecContext) {
		drv = driver()
		nodes := drv.Nodes()
		Expect(len(nodes)).To(BeNumerically(">=", 2), "the scenarios need two nodes")
		nodeA, nodeB = nodes[0], nodes[1]
		ns = newNamespace(ctx, drv)
		cli = clientPod(ctx, drv, ns, "client", nodeB)
	})
	// On failure, what the kernel held on every node: enough to tell a programming bug from a data-path one.
	AfterEach(func(ctx SpecContext) {
		if !CurrentSpecReport().Failed() {
			return
		}
		for _, node := range drv.Nodes() {
			for _, argv := range [][]string{
				{"ipvsadm", "-Ln", "--stats"}, {"ipvsadm", "-Lnc"}, {"ip", "-o", "addr", "show", "dev", agentInterface},
				{"nft", "list", "table", "inet", "ipvs-operator"},
			} {
				out, err := drv.NodeExec(ctx, node, argv...)
				AddReportEntry(fmt.Sprintf("%s: %s", node, strings.Join(argv, " ")), fmt.Sprintf("%s%v", out, err))
			}
		}
	})

	// expectServed checks the virtual server for vip:port on every node lists exactly the pods' endpoints.
	expectServed := func(ctx context.Context, vip string, port int32, proto ipvs.Protocol, want []string) {
		GinkgoHelper()
		for _, node := range drv.Nodes() {
			Eventually(ctx, func(g Gomega) {
				table, raw := ipvsSave(ctx, drv, node)
				vs := virtualServer(table, vip, port, proto)
				g.Expect(vs).NotTo(BeNil(), "no virtual server %s:%d on %s:\n%s", vip, port, node, raw)
				g.Expect(activeRealServers(vs)).To(Equal(want), "real servers on %s:\n%s", node, raw)
			}).WithTimeout(20 * time.Second).WithPolling(200 * time.Millisecond).Should(Succeed())
		}
	}

	// servedWeb makes the common fixture: a Deployment of echo pods (optionally pinned to a node) behind a
	// Service 80 -> 8080 labelled for this proxy, and waits until every node programs all its pods.
	servedWeb := func(ctx context.Context, name string, replicas int32, node string) (*corev1.Service, []corev1.Pod) {
		GinkgoHelper()
		echoDeployment(ctx, drv, ns, name, replicas, node, httpPort)
		svc := newService(ctx, drv, ns, name, map[string]string{"app": name}, nil,
			svcPort("http", 80, intstr.FromInt32(8080), corev1.ProtocolTCP))
		pods := waitPodsReady(ctx, drv, ns, map[string]string{"app": name}, int(replicas))
		expectServed(ctx, svc.Spec.ClusterIP, 80, ipvs.TCP, endpoints(podIPs(pods), 8080))
		return svc, pods
	}

	Describe("a ClusterIP Service over a Deployment", func() {
		It("binds the ClusterIP on every node, programs one virtual server with 3 real servers, and spreads rr 10/10/10", func(ctx SpecContext) {
			echoDeployment(ctx, drv, ns, "web", 3, "", httpPort)
			svc := newService(ctx, drv, ns, "web", map[string]string{"app": "web"}, func(s *corev1.Service) {
				s.Spec.Type = corev1.ServiceTypeClusterIP
			}, svcPort("http", 80, intstr.FromInt32(8080), corev1.ProtocolTCP))
			pods := waitPodsReady(ctx, drv, ns, map[string]string{"app": "web"}, 3)
			vip := svc.Spec.ClusterIP

			expectServed(ctx, vip, 80, ipvs.TCP, endpoints(podIPs(pods), 8080))
			for _, node := range drv.Nodes() {
				Expect(boundVIPs(ctx, drv, node)).To(ContainSubstring(vip+"/32"), "ClusterIP bound on %s", node)
				table, raw := ipvsSave(ctx, drv, node)
				Expect(virtualServer(table, vip, 80, ipvs.TCP).Scheduler).To(Equal("rr"), raw)
			}

			got := fromPod(ctx, drv, cli, request{addr: hostPort(vip, 80), count: 30})
			Expect(got.Failed).To(BeZero(), got.Raw)
			want := map[string]int{}
			for _, n := range podNames(pods) {
				want[n] = 10
			}
			Expect(got.Answers).To(Equal(want), "rr over 3 pods from a pod on the other node")
		})

		It("treats a Service with no type as ClusterIP", func(ctx SpecContext) {
			echoDeployment(ctx, drv, ns, "notype", 2, "", httpPort)
			svc := newService(ctx, drv, ns, "notype", map[string]string{"app": "notype"}, nil,
				svcPort("", 80, intstr.FromInt32(8080), ""))
			Expect(svc.Spec.Type).To(Equal(corev1.ServiceTypeClusterIP))
			pods := waitPodsReady(ctx, drv, ns, map[string]string{"app": "notype"}, 2)
			expectServed(ctx, svc.Spec.ClusterIP, 80, ipvs.TCP, endpoints(podIPs(pods), 8080))
			got := fromPod(ctx, drv, cli, request{addr: hostPort(svc.Spec.ClusterIP, 80), count: 10})
			Expect(got.Failed).To(BeZero(), got.Raw)
			Expect(got.Answers).To(HaveLen(2))
		})

		It("serves several named ports with named targetPorts", func(ctx SpecContext) {
			echoDeployment(ctx, drv, ns, "multi", 2, "", httpPort, httpsPort)
			svc := newService(ctx, drv, ns, "multi", map[string]string{"app": "multi"}, nil,
				svcPort("http", 80, intstr.FromString("http"), corev1.ProtocolTCP),
				svcPort("https", 443, intstr.FromString("https"), corev1.ProtocolTCP))
			pods := waitPodsReady(ctx, drv, ns, map[string]string{"app": "multi"}, 2)
			expectServed(ctx, svc.Spec.ClusterIP, 80, ipvs.TCP, endpoints(podIPs(pods), 8080))
			expectServed(ctx, svc.Spec.ClusterIP, 443, ipvs.TCP, endpoints(podIPs(pods), 8443))
			for _, port := range []int32{80, 443} {
				got := fromPod(ctx, drv, cli, request{proto: "tcp", addr: hostPort(svc.Spec.ClusterIP, port), count: 6})
				Expect(got.Failed).To(BeZero(), "port %d: %s", port, got.Raw)
				Expect(got.Answers).To(HaveLen(2), "port %d reaches both pods", port)
			}
		})
	})

	Describe("a live Service edited in place", func() {
		It("moves to a new port and takes sessionAffinity on every node, with traffic", func(ctx SpecContext) {
			svc, pods := servedWeb(ctx, "edited", 3, "")
			vip := svc.Spec.ClusterIP
			edit := func(f func(*corev1.Service)) {
				GinkgoHelper()
				Expect(drv.Client().Get(ctx, client.ObjectKeyFromObject(svc), svc)).To(Succeed())
				f(svc)
				Expect(drv.Client().Update(ctx, svc)).To(Succeed())
			}

			By("port 80 -> 81")
			edit(func(s *corev1.Service) { s.Spec.Ports[0].Port = 81 })
			expectServed(ctx, vip, 81, ipvs.TCP, endpoints(podIPs(pods), 8080))
			for _, node := range drv.Nodes() {
				table, raw := ipvsSave(ctx, drv, node)
				Expect(virtualServer(table, vip, 80, ipvs.TCP)).To(BeNil(), "the old port's virtual server is gone on %s:\n%s", node, raw)
			}
			got := fromPod(ctx, drv, cli, request{addr: hostPort(vip, 81), count: 6})
			Expect(got.Failed).To(BeZero(), got.String())
			Expect(got.Answers).To(HaveLen(3))
			old := fromPod(ctx, drv, cli, request{proto: "tcp", addr: hostPort(vip, 80), count: 1})
			Expect(old.OK).To(BeZero(), "the old port is not served any more: %s", old)
			Expect(old.Sequence).To(ConsistOf(ContainSubstring("refused")), "nothing listens there: refused at once, not lost")

			By("sessionAffinity ClientIP")
			edit(func(s *corev1.Service) { s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP })
			for _, node := range drv.Nodes() {
				Eventually(ctx, func() time.Duration {
					table, _ := ipvsSave(ctx, drv, node)
					if vs := virtualServer(table, vip, 81, ipvs.TCP); vs != nil {
						return vs.Persistence
					}
					return 0
				}).WithTimeout(20*time.Second).WithPolling(200*time.Millisecond).Should(Equal(10800*time.Second), "on %s", node)
			}
			sticky := fromPod(ctx, drv, cli, request{addr: hostPort(vip, 81), count: 12})
			Expect(sticky.Failed).To(BeZero(), sticky.String())
			Expect(sticky.Answers).To(HaveLen(1), "one client, one pod: %s", sticky)
		})
	})

	Describe("Services without a selector", func() {
		// A server outside the pod network: an echo server in node B's host network namespace.
		var serverIP string
		BeforeEach(func(ctx SpecContext) {
			p := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "external", Labels: map[string]string{"role": "external"}},
				Spec:       echoPodSpec(drv, echoPort{"http", 9090, corev1.ProtocolTCP}),
			}
			p.Spec.HostNetwork = true
			p.Spec.NodeName = nodeB
			p.Spec.Containers[0].ReadinessProbe.HTTPGet.Port = intstr.FromInt32(9090)
			Expect(drv.Client().Create(ctx, p)).To(Succeed())
			pods := waitPodsReady(ctx, drv, ns, map[string]string{"role": "external"}, 1)
			serverIP = pods[0].Status.PodIP
			Expect(serverIP).To(Equal(pods[0].Status.HostIP), "a host-network pod has the node's IP")
		})

		It("serves a hand-made EndpointSlice", func(ctx SpecContext) {
			svc := newService(ctx, drv, ns, "manual", nil, nil, svcPort("http", 80, intstr.FromInt32(9090), corev1.ProtocolTCP))
			Expect(drv.Client().Create(ctx, handMadeSlice(ns, "manual", 9090, serverIP))).To(Succeed())
			expectServed(ctx, svc.Spec.ClusterIP, 80, ipvs.TCP, []string{hostPort(serverIP, 9090)})
			got := fromPod(ctx, drv, cli, request{addr: hostPort(svc.Spec.ClusterIP, 80), count: 3})
			Expect(got.Answers).To(Equal(map[string]int{"external": 3}), got.Raw)
		})

		It("serves a legacy Endpoints object through the mirroring controller", func(ctx SpecContext) {
			svc := newService(ctx, drv, ns, "legacy", nil, nil, svcPort("http", 80, intstr.FromInt32(9090), corev1.ProtocolTCP))
			ep := &corev1.Endpoints{ //nolint:staticcheck // the point is to prove the legacy API still works
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "legacy"},
				Subsets: []corev1.EndpointSubset{{ //nolint:staticcheck // the legacy Endpoints API, on purpose (see above)
					Addresses: []corev1.EndpointAddress{{IP: serverIP}},
					Ports:     []corev1.EndpointPort{{Name: "http", Port: 9090, Protocol: corev1.ProtocolTCP}},
				}},
			}
			Expect(drv.Client().Create(ctx, ep)).To(Succeed())
			expectServed(ctx, svc.Spec.ClusterIP, 80, ipvs.TCP, []string{hostPort(serverIP, 9090)})
			got := fromPod(ctx, drv, cli, request{addr: hostPort(svc.Spec.ClusterIP, 80), count: 3})
			Expect(got.Answers).To(Equal(map[string]int{"external": 3}), got.Raw)
		})
	})

	Describe("endpoint changes", func() {
		It("replaces a deleted pod's real server within 2 s, keeps the ClusterIP, and a steady loop sees no failure", func(ctx SpecContext) {
			svc, pods := servedWeb(ctx, "churn", 3, "")
			vip := svc.Spec.ClusterIP

			loop := background(func() outcome {
				return fromPod(ctx, drv, cli, request{addr: hostPort(vip, 80), duration: 15 * time.Second, interval: 50 * time.Millisecond, timeout: steadyTimeout})
			})
			time.Sleep(2 * time.Second)
			victim := pods[0]
			Expect(drv.Client().Delete(ctx, &victim)).To(Succeed())
			// The replacement becomes Ready; from then on its real server must be in every node's table
			// within 2 s, and the deleted pod's must be gone from rotation.
			var fresh []corev1.Pod
			Eventually(ctx, func(g Gomega) {
				fresh = waitPodsReady(ctx, drv, ns, map[string]string{"app": "churn"}, 3)
				g.Expect(podNames(fresh)).NotTo(ContainElement(victim.Name))
			}).WithTimeout(60 * time.Second).Should(Succeed())
			for _, node := range drv.Nodes() {
				Eventually(ctx, func(g Gomega) {
					table, raw := ipvsSave(ctx, drv, node)
					g.Expect(activeRealServers(virtualServer(table, vip, 80, ipvs.TCP))).To(Equal(endpoints(podIPs(fresh), 8080)), raw)
				}).WithTimeout(2*time.Second).WithPolling(100*time.Millisecond).Should(Succeed(), "new real server on %s within 2 s", node)
			}
			current := &corev1.Service{}
			Expect(drv.Client().Get(ctx, client.ObjectKeyFromObject(svc), current)).To(Succeed())
			Expect(current.Spec.ClusterIP).To(Equal(vip), "the ClusterIP does not change")

			got := loop()
			Expect(got.Failed).To(BeZero(), "steady request loop during the pod's replacement: %s", got)
			Expect(got.OK).To(BeNumerically(">", 50))
		})

		It("takes a pod whose readiness fails out of rotation within 2 s, and back when it recovers", func(ctx SpecContext) {
			svc, pods := servedWeb(ctx, "probe", 2, "")
			vip := svc.Spec.ClusterIP

			sick := pods[0]
			fromPod(ctx, drv, cli, request{addr: hostPort(sick.Status.PodIP, 8080) + "/admin/fail-readiness"})
			waitPodsReady(ctx, drv, ns, map[string]string{"app": "probe"}, 1)
			for _, node := range drv.Nodes() {
				Eventually(ctx, func(g Gomega) {
					table, raw := ipvsSave(ctx, drv, node)
					g.Expect(activeRealServers(virtualServer(table, vip, 80, ipvs.TCP))).To(Equal(endpoints([]string{pods[1].Status.PodIP}, 8080)), raw)
				}).WithTimeout(2*time.Second).WithPolling(100*time.Millisecond).Should(Succeed(), "out of rotation on %s", node)
			}
			got := fromPod(ctx, drv, cli, request{addr: hostPort(vip, 80), count: 6})
			Expect(got.Answers).To(Equal(map[string]int{pods[1].Name: 6}), got.Raw)

			fromPod(ctx, drv, cli, request{addr: hostPort(sick.Status.PodIP, 8080) + "/admin/pass-readiness"})
			waitPodsReady(ctx, drv, ns, map[string]string{"app": "probe"}, 2)
			expectServed(ctx, vip, 80, ipvs.TCP, endpoints(podIPs(pods), 8080))
		})

		It("refuses a client at once when no endpoint is ready", func(ctx SpecContext) {
			svc := newService(ctx, drv, ns, "empty", map[string]string{"app": "nothing"}, nil,
				svcPort("http", 80, intstr.FromInt32(8080), corev1.ProtocolTCP))
			expectServed(ctx, svc.Spec.ClusterIP, 80, ipvs.TCP, nil)
			start := time.Now()
			got := fromPod(ctx, drv, cli, request{proto: "tcp", addr: hostPort(svc.Spec.ClusterIP, 80), count: 1, timeout: 3 * time.Second})
			Expect(got.Sequence).To(ConsistOf(ContainSubstring("refused")), got.Raw)
			Expect(time.Since(start)).To(BeNumerically("<", 3*time.Second), "refused, not left hanging")
		})
	})

	Describe("who can reach a ClusterIP", func() {
		var (
			vip  string
			pods []corev1.Pod
		)
		BeforeEach(func(ctx SpecContext) {
			svc, ps := servedWeb(ctx, "reach", 2, nodeA)
			pods, vip = ps, svc.Spec.ClusterIP
		})

		It("is not reachable from a host outside the cluster, and no node answers ARP for it", func(ctx SpecContext) {
			got := fromOutside(ctx, drv, request{proto: "tcp", addr: hostPort(vip, 80), count: 3, timeout: time.Second})
			Expect(got.OK).To(BeZero(), "a ClusterIP must not serve the outside: %s", got.Raw)
			out, err := drv.OutsideExec(ctx, "arping", "-c", "2", "-w", "2", vip)
			Expect(err).To(HaveOccurred(), "arping %s got an answer: %s", vip, out)
		})

		It("refuses a pod at once on a ClusterIP port that is no Service port, though its node listens there", func(ctx SpecContext) {
			// A listener in node B's host network on every address, TCP and UDP, as the kubelet or sshd
			// listen; the client pod is on node B, where the ClusterIPs are bound. A Service on that
			// listener makes its ClusterIP serve port 80, and a UDP Service serves port 53 from a pod.
			p := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "listener", Labels: map[string]string{"role": "listener"}},
				Spec:       echoPodSpec(drv, echoPort{"http", nodeListenerPort, corev1.ProtocolTCP}, echoPort{"udp", nodeListenerPort, corev1.ProtocolUDP}),
			}
			p.Spec.HostNetwork = true
			p.Spec.NodeName = nodeB
			p.Spec.Containers[0].ReadinessProbe.HTTPGet.Port = intstr.FromInt32(nodeListenerPort)
			Expect(drv.Client().Create(ctx, p)).To(Succeed())
			echoDeployment(ctx, drv, ns, "udp", 1, nodeA, httpPort, udpPort)
			listener := waitPodsReady(ctx, drv, ns, map[string]string{"role": "listener"}, 1)[0]
			nodeIP := listener.Status.HostIP
			lsvc := newService(ctx, drv, ns, "listener", map[string]string{"role": "listener"}, nil,
				svcPort("http", 80, intstr.FromInt32(nodeListenerPort), corev1.ProtocolTCP))
			usvc := newService(ctx, drv, ns, "udp", map[string]string{"app": "udp"}, nil,
				svcPort("dns", 53, intstr.FromString("dns"), corev1.ProtocolUDP))
			upods := waitPodsReady(ctx, drv, ns, map[string]string{"app": "udp"}, 1)
			lvip, uvip := lsvc.Spec.ClusterIP, usvc.Spec.ClusterIP
			expectServed(ctx, lvip, 80, ipvs.TCP, []string{hostPort(nodeIP, nodeListenerPort)})
			expectServed(ctx, uvip, 53, ipvs.UDP, endpoints(podIPs(upods), udpPort.port))

			By("positive controls: the node listens, and the Service ports work")
			for _, r := range []request{
				{proto: "tcp", addr: hostPort(nodeIP, nodeListenerPort), count: 2},
				{proto: "tcp", addr: hostPort(lvip, 80), count: 2},
				{proto: "tcp", addr: hostPort(vip, 80), count: 2},
				{proto: "udp", addr: hostPort(uvip, 53), count: 2},
			} {
				got := fromPod(ctx, drv, cli, r)
				Expect(got.Failed).To(BeZero(), "%s %s: %s", r.proto, r.addr, got)
			}

			By("the node's ports on a ClusterIP: refused at once, TCP and UDP")
			// (A UDP datagram that reaches the node's listener is answered from another source address, so
			// without the filter the client sees a timeout; with it, refused.)
			refusals := []request{
				{proto: "tcp", addr: hostPort(lvip, nodeListenerPort)},
				{proto: "tcp", addr: hostPort(vip, nodeListenerPort)},
				{proto: "tcp", addr: hostPort(vip, agentMetricsPort)}, // the agent's own port
				{proto: "udp", addr: hostPort(lvip, nodeListenerPort)},
				{proto: "udp", addr: hostPort(uvip, nodeListenerPort)},
			}
			checks := make([]func(), 0, len(refusals))
			for _, r := range refusals {
				r.count, r.timeout = 3, 5*time.Second
				start := time.Now()
				got := fromPod(ctx, drv, cli, r)
				took := time.Since(start)
				// Every outcome is printed before any is judged, so a failure shows them all.
				GinkgoWriter.Printf("%s %s: %s in %s\n", r.proto, r.addr, got, took.Round(time.Millisecond))
				AddReportEntry(r.proto+" "+r.addr, fmt.Sprintf("%s in %s", got, took.Round(time.Millisecond)))
				checks = append(checks, func() {
					Expect(got.OK).To(BeZero(), "%s %s reached the node through a ClusterIP: %s", r.proto, r.addr, got)
					Expect(got.Sequence).To(HaveEach(ContainSubstring("refused")), "%s %s: refused, not lost: %s", r.proto, r.addr, got)
					// Three requests: one SYN retransmission (1 s) each would already break this bound.
					Expect(took).To(BeNumerically("<", 3*time.Second), "%s %s: refused at once, not after a retry", r.proto, r.addr)
				})
			}
			for _, check := range checks {
				check()
			}
		})

		It("serves a pod whose endpoints are all on the other node", func(ctx SpecContext) {
			// client runs on node B, both pods on node A.
			got := fromPod(ctx, drv, cli, request{addr: hostPort(vip, 80), count: 4})
			Expect(got.Failed).To(BeZero(), got.Raw)
			Expect(got.Answers).To(HaveLen(2))
		})

		It("serves a node's own host network namespace", func(ctx SpecContext) {
			for _, node := range drv.Nodes() {
				got := fromNode(ctx, drv, node, request{addr: hostPort(vip, 80), count: 4})
				Expect(got.Failed).To(BeZero(), "from node %s: %s", node, got.Raw)
				Expect(got.Answers).To(HaveLen(2), "from node %s", node)
			}
		})

		It("serves a pod reaching itself through its own Service (hairpin)", func(ctx SpecContext) {
			Expect(drv.Client().Patch(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "reach"}},
				client.RawPatch("application/merge-patch+json", []byte(`{"spec":{"replicas":1}}`)))).To(Succeed())
			pods = waitPodsReady(ctx, drv, ns, map[string]string{"app": "reach"}, 1)
			expectServed(ctx, vip, 80, ipvs.TCP, endpoints(podIPs(pods), 8080))
			got := fromPod(ctx, drv, &pods[0], request{addr: hostPort(vip, 80), count: 3})
			Expect(got.Answers).To(Equal(map[string]int{pods[0].Name: 3}), got.Raw)
		})
	})

	Describe("ServicePolicy", func() {
		It("lc sends new connections away from a pod holding connections, and rr -> lc changes the scheduler in place", func(ctx SpecContext) {
			echoDeployment(ctx, drv, ns, "lc", 3, "", httpPort)
			policy := newPolicy(ctx, drv, ns, "balance", "lc", lbv1alpha1.SchedulerRoundRobin)
			svc := newService(ctx, drv, ns, "lc", map[string]string{"app": "lc"}, nil,
				svcPort("tcp", 80, intstr.FromInt32(8080), corev1.ProtocolTCP))
			pods := waitPodsReady(ctx, drv, ns, map[string]string{"app": "lc"}, 3)
			vip := svc.Spec.ClusterIP
			expectServed(ctx, vip, 80, ipvs.TCP, endpoints(podIPs(pods), 8080))

			// Two connections held open through the VIP while the scheduler changes under them.
			held := background(func() outcome {
				// Held long enough to outlast the scheduler change and the checks below on a loaded machine.
				return fromPod(ctx, drv, cli, request{proto: "tcp", addr: hostPort(vip, 80), count: 2, hold: 40 * time.Second})
			})
			Eventually(ctx, func(g Gomega) {
				out, err := drv.NodeExec(ctx, nodeB, "ipvsadm", "-Ln", "-t", hostPort(vip, 80))
				g.Expect(err).NotTo(HaveOccurred())
				g.Expect(activeConnections(out)).To(Equal(2), out)
			}).WithTimeout(10 * time.Second).Should(Succeed())

			// A merge patch, as `kubectl patch` does: the operator writes the policy's status concurrently.
			before := policy.DeepCopy()
			policy.Spec.Scheduler = lbv1alpha1.SchedulerLeastConnection
			Expect(drv.Client().Patch(ctx, policy, client.MergeFrom(before))).To(Succeed())
			Eventually(ctx, func(g Gomega) {
				table, raw := ipvsSave(ctx, drv, nodeB)
				g.Expect(virtualServer(table, vip, 80, ipvs.TCP).Scheduler).To(Equal("lc"), raw)
			}).WithTimeout(10 * time.Second).Should(Succeed())
			out, err := drv.NodeExec(ctx, nodeB, "ipvsadm", "-Ln", "-t", hostPort(vip, 80))
			Expect(err).NotTo(HaveOccurred())
			Expect(activeConnections(out)).To(Equal(2), "established connections survive the scheduler change:\n%s", out)

			// With two pods each holding one connection, lc sends every new connection to the third.
			busy := map[string]bool{}
			for _, line := range strings.Split(out, "\n") {
				f := strings.Fields(line)
				if len(f) >= 6 && f[0] == "->" && f[4] == "1" {
					busy[f[1]] = true
				}
			}
			Expect(busy).To(HaveLen(2), out)
			var idle string
			for _, p := range pods {
				if !busy[hostPort(p.Status.PodIP, 8080)] {
					idle = p.Name
				}
			}
			// A pause between requests: lc weighs an active connection 256 times an inactive one, so one
			// request whose close IPVS has not yet seen (a FIN still queued on the other vCPU when the next
			// SYN is scheduled) would tip the idle pod's count over a held pod's (256 + 7 > 256).
			got := fromPod(ctx, drv, cli, request{addr: hostPort(vip, 80), count: 8, interval: 200 * time.Millisecond})
			out, err = drv.NodeExec(ctx, nodeB, "ipvsadm", "-Ln", "-t", hostPort(vip, 80))
			Expect(err).NotTo(HaveOccurred())
			Expect(activeConnections(out)).To(Equal(2), "the held connections outlived the check, or it proves nothing:\n%s", out)
			Expect(got.Answers).To(Equal(map[string]int{idle: 8}), "lc picks the pod without held connections: %s", got.Raw)

			h := held()
			Expect(h.Failed).To(BeZero(), "held connections: %s", h.Raw)
		})

		It("keeps one client on one pod with sessionAffinity ClientIP", func(ctx SpecContext) {
			echoDeployment(ctx, drv, ns, "sticky", 3, "", httpPort)
			svc := newService(ctx, drv, ns, "sticky", map[string]string{"app": "sticky"}, func(s *corev1.Service) {
				s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
				s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr.To[int32](600)}}
			}, svcPort("http", 80, intstr.FromInt32(8080), corev1.ProtocolTCP))
			pods := waitPodsReady(ctx, drv, ns, map[string]string{"app": "sticky"}, 3)
			expectServed(ctx, svc.Spec.ClusterIP, 80, ipvs.TCP, endpoints(podIPs(pods), 8080))
			table, raw := ipvsSave(ctx, drv, nodeB)
			Expect(virtualServer(table, svc.Spec.ClusterIP, 80, ipvs.TCP).Persistence).To(Equal(600*time.Second), raw)
			got := fromPod(ctx, drv, cli, request{addr: hostPort(svc.Spec.ClusterIP, 80), count: 12})
			Expect(got.Failed).To(BeZero(), got.Raw)
			Expect(got.Answers).To(HaveLen(1), "one client, one pod: %s", got)
		})
	})

	Describe("UDP", func() {
		It("serves a UDP Service, and a removed endpoint stops receiving at once", func(ctx SpecContext) {
			echoDeployment(ctx, drv, ns, "dns", 2, "", httpPort, udpPort)
			svc := newService(ctx, drv, ns, "dns", map[string]string{"app": "dns"}, nil,
				svcPort("dns", 53, intstr.FromString("dns"), corev1.ProtocolUDP))
			pods := waitPodsReady(ctx, drv, ns, map[string]string{"app": "dns"}, 2)
			vip := svc.Spec.ClusterIP
			expectServed(ctx, vip, 53, ipvs.UDP, endpoints(podIPs(pods), 5353))

			// One flow (fixed source port) sticks to one pod; take that pod out of rotation.
			flow := request{proto: "udp", addr: hostPort(vip, 53), count: 3, srcPort: 40053}
			first := fromPod(ctx, drv, cli, flow)
			Expect(first.Answers).To(HaveLen(1), first.Raw)
			var victim, survivor corev1.Pod
			for _, p := range pods {
				if first.Answers[p.Name] > 0 {
					victim = p
				} else {
					survivor = p
				}
			}
			fromPod(ctx, drv, cli, request{addr: hostPort(victim.Status.PodIP, 8080) + "/admin/fail-readiness"})
			expectServed(ctx, vip, 53, ipvs.UDP, endpoints([]string{survivor.Status.PodIP}, 5353))
			table, raw := ipvsSave(ctx, drv, nodeB)
			Expect(realServers(virtualServer(table, vip, 53, ipvs.UDP))).To(HaveLen(1), "UDP real servers are deleted, not drained:\n%s", raw)
			after := fromPod(ctx, drv, cli, flow)
			Expect(after.Answers).To(Equal(map[string]int{survivor.Name: 3}), "the same flow moves at once: %s", after.Raw)
		})
	})

	Describe("the operator", func() {
		It("warns once that a NodePort Service's node port is not served, and not again after its own restart", func(ctx SpecContext) {
			expectNotServedOnce(ctx, drv, ns)
		})
	})

	Describe("the agent", func() {
		It("restarts under a steady request loop with zero failures and adopts the kernel state", func(ctx SpecContext) {
			svc, _ := servedWeb(ctx, "steady", 2, "")
			vip := svc.Spec.ClusterIP
			expectSteadyRestart(ctx, drv, nodeB, vip, func() outcome {
				return fromPod(ctx, drv, cli, request{addr: hostPort(vip, 80), duration: 12 * time.Second, interval: 50 * time.Millisecond, timeout: steadyTimeout})
			})
		})

		It("keeps serving through a restart while the ServicePolicy CRD is deleted", func(ctx SpecContext) {
			svc, _ := servedWeb(ctx, "nocrd", 2, "")
			vip := svc.Spec.ClusterIP
			_, before := ipvsSave(ctx, drv, nodeB)

			By("deleting the CRD (and with it every ServicePolicy)")
			crd := &apiextensionsv1.CustomResourceDefinition{}
			Expect(drv.Client().Get(ctx, client.ObjectKey{Name: servicePolicyCRD}, crd)).To(Succeed())
			Expect(drv.Client().Delete(ctx, crd)).To(Succeed())
			DeferCleanup(restoreCRD, drv, crd)
			Eventually(ctx, func() bool {
				return apierrors.IsNotFound(drv.Client().Get(ctx, client.ObjectKey{Name: servicePolicyCRD}, &apiextensionsv1.CustomResourceDefinition{}))
			}).WithTimeout(60 * time.Second).Should(BeTrue())

			By("restarting node B's agent under a steady request loop from a pod on node B")
			loop := background(func() outcome {
				return fromPod(ctx, drv, cli, request{addr: hostPort(vip, 80), duration: 15 * time.Second, interval: 50 * time.Millisecond, timeout: steadyTimeout})
			})
			restartAgent(ctx, drv, nodeB)
			got := loop()
			Expect(got.Failed).To(BeZero(), "requests through node %s while its agent restarted without the CRD: %s", nodeB, got)
			// Longer than the lab's audit period: a sweep of Services it could not evaluate would show.
			Consistently(ctx, func() []string {
				_, after := ipvsSave(ctx, drv, nodeB)
				return vsLines(after, vip)
			}).WithTimeout(12 * time.Second).WithPolling(time.Second).Should(Equal(vsLines(before, vip)))
		})

		It("leaves an IPVS service made by hand alone", func(ctx SpecContext) {
			const foreign = "198.51.100.77:8000"
			_, err := drv.NodeExec(ctx, nodeA, "ipvsadm", "-A", "-t", foreign, "-s", "wlc")
			Expect(err).NotTo(HaveOccurred())
			DeferCleanup(func(ctx SpecContext) { _, _ = drv.NodeExec(ctx, nodeA, "ipvsadm", "-D", "-t", foreign) })
			_, err = drv.NodeExec(ctx, nodeA, "ipvsadm", "-a", "-t", foreign, "-r", "198.51.100.78:8000", "-m", "-w", "3")
			Expect(err).NotTo(HaveOccurred())

			// Program something, restart the agent (adoption + first audit), and look again.
			servedWeb(ctx, "mine", 1, "")
			restartAgent(ctx, drv, nodeA)
			_, raw := ipvsSave(ctx, drv, nodeA)
			Expect(raw).To(ContainSubstring("-A -t " + foreign + " -s wlc"))
			Expect(raw).To(ContainSubstring("-a -t " + foreign + " -r 198.51.100.78:8000 -m -w 3"))
		})
	})

	registerChurn(&drv, &ns)
	registerHealthChecks(&drv, &ns, &cli)
	registerSlowStart(&drv, &ns)
}

// steadyTimeout bounds each request of a steady loop. It is longer than a single request's 2 s: under TCG
// emulation a Go binary starting in the VM (the restarted agent, a replacement pod) can stall it for a
// couple of seconds, which is not a data-path failure. A torn-down path still fails: refused at once, or a
// SYN lost past two retransmissions.
const steadyTimeout = 5 * time.Second

// activeConnections sums the ActiveConn column of `ipvsadm -Ln -t VIP:PORT`.
func activeConnections(out string) int {
	total := 0
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 6 && f[0] == "->" && f[1] != "RemoteAddress:Port" {
			var n int
			_, _ = fmt.Sscanf(f[4], "%d", &n)
			total += n
		}
	}
	return total
}

// vsLines are the lines of an `ipvsadm -Sn` dump that mention vip.
func vsLines(save, vip string) []string {
	var out []string
	for _, l := range strings.Split(save, "\n") {
		if strings.Contains(l, vip+":") {
			out = append(out, l)
		}
	}
	return out
}

// savedAddr is vip as `ipvsadm -Sn` writes it in a virtual server's address: IPv6 in brackets.
func savedAddr(vip string) string {
	if netip.MustParseAddr(vip).Is6() {
		return "[" + vip + "]"
	}
	return vip
}

// expectSteadyRestart restarts node's agent while loop sends requests, and expects none of them to fail and
// the node's virtual servers of vip to be adopted unchanged. It returns the loop's outcome.
func expectSteadyRestart(ctx context.Context, drv Driver, node, vip string, loop func() outcome) outcome {
	GinkgoHelper()
	_, before := ipvsSave(ctx, drv, node)
	Expect(vsLines(before, savedAddr(vip))).NotTo(BeEmpty(), "virtual servers of %s on %s before the restart", vip, node)
	wait := background(loop)
	restartAgent(ctx, drv, node)
	got := wait()
	Expect(got.Failed).To(BeZero(), "requests through node %s while its agent restarted: %s", node, got)
	_, after := ipvsSave(ctx, drv, node)
	Expect(vsLines(after, savedAddr(vip))).To(Equal(vsLines(before, savedAddr(vip))), "the restarted agent on %s adopted the virtual servers of %s", node, vip)
	return got
}

// restartAgent deletes the agent pod of a node and waits for its replacement to be Ready.
func restartAgent(ctx context.Context, drv Driver, node string) {
	GinkgoHelper()
	RestartAgent(ctx, drv, node, nil)
}

// RestartAgent deletes the agent pod of node and waits, polling every 250 ms, until the node has a new Ready
// one. during, if not nil, runs at each poll, from the deletion on: the caller's check of the data path
// while no agent, then a starting one, runs on the node.
func RestartAgent(ctx context.Context, drv Driver, node string, during func()) {
	GinkgoHelper()
	list := &corev1.PodList{}
	Expect(drv.Client().List(ctx, list, client.InNamespace(AgentNamespace), client.MatchingLabels{agentLabel: agentLabelVal})).To(Succeed())
	var old *corev1.Pod
	for i := range list.Items {
		if list.Items[i].Spec.NodeName == node {
			old = &list.Items[i]
		}
	}
	Expect(old).NotTo(BeNil(), "no agent pod on %s", node)
	Expect(drv.Client().Delete(ctx, old)).To(Succeed())
	Eventually(ctx, func(g Gomega) {
		if during != nil {
			during()
		}
		g.Expect(drv.Client().List(ctx, list, client.InNamespace(AgentNamespace), client.MatchingLabels{agentLabel: agentLabelVal})).To(Succeed())
		found := false
		for _, p := range list.Items {
			if p.Spec.NodeName == node && p.UID != old.UID && podReady(&p) {
				found = true
			}
		}
		g.Expect(found).To(BeTrue(), "a new Ready agent on %s", node)
	}).WithTimeout(90 * time.Second).WithPolling(250 * time.Millisecond).Should(Succeed())
}

// servicePolicyCRD is the name of the ServicePolicy CRD.
const servicePolicyCRD = "servicepolicies.lb.ipvs-operator.dev"

// restoreCRD creates a deleted CRD again from the copy read before deleting it, and waits until it is served.
func restoreCRD(ctx context.Context, drv Driver, saved *apiextensionsv1.CustomResourceDefinition) {
	crd := &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: saved.Name, Labels: saved.Labels, Annotations: saved.Annotations},
		Spec:       saved.Spec,
	}
	Eventually(ctx, func() error {
		err := drv.Client().Create(ctx, crd)
		if apierrors.IsAlreadyExists(err) {
			return nil
		}
		return err
	}).WithTimeout(60*time.Second).Should(Succeed(), "the old CRD may still be terminating")
	Eventually(ctx, func(g Gomega) {
		got := &apiextensionsv1.CustomResourceDefinition{}
		g.Expect(drv.Client().Get(ctx, client.ObjectKey{Name: saved.Name}, got)).To(Succeed())
		established := false
		for _, c := range got.Status.Conditions {
			established = established || (c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue)
		}
		g.Expect(established).To(BeTrue())
	}).WithTimeout(30 * time.Second).Should(Succeed())
}
