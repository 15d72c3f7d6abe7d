package dataplane

import (
	"context"
	"fmt"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ipvs-operator/ipvs-operator/api/agentconfig"
	"github.com/ipvs-operator/ipvs-operator/ipvs"
)

// The ClusterRoles config/default installs (with its name prefix) for reading the agents' ports.
const (
	metricsReaderRole = "ipvs-operator-metrics-reader"
	debugReaderRole   = "ipvs-operator-agent-debug-reader"
)

// RegisterAgentPorts registers the specs of who may read the agent's ports. The agent runs on the host
// network, so its ports are open on every address of its node, to anything that reaches the node.
func RegisterAgentPorts(driver func() Driver) {
	Describe("the agent's ports on the node", func() {
		It("serve /metrics and /debug/ipvs only to a token with the right, and the health port tells only ok", func(ctx SpecContext) {
			drv := driver()
			ns := newNamespace(ctx, drv)
			node := drv.Nodes()[0]
			ip := nodeInternalIP(ctx, drv, node)

			// Something in the table: a selector-less Service with a hand-made slice (no pod needed).
			svc := newService(ctx, drv, ns, "secret", nil, nil, svcPort("http", 80, intstr.FromInt32(9090), corev1.ProtocolTCP))
			Expect(drv.Client().Create(ctx, handMadeSlice(ns, "secret", 9090, "10.244.1.250"))).To(Succeed())
			var save string
			Eventually(ctx, func(g Gomega) {
				table, raw := ipvsSave(ctx, drv, node)
				g.Expect(virtualServer(table, svc.Spec.ClusterIP, 80, ipvs.TCP)).NotTo(BeNil(), raw)
				save = raw
			}).WithTimeout(20 * time.Second).WithPolling(200 * time.Millisecond).Should(Succeed())

			tokens := map[string]string{"": ""}
			for sa, role := range map[string]string{"prometheus": metricsReaderRole, "debugger": debugReaderRole, "nobody": ""} {
				tokens[sa] = serviceAccountToken(ctx, drv, ns, sa, role)
			}
			metrics := "https://" + hostPort(ip, agentconfig.DefaultMetricsPort)
			health := "http://" + hostPort(ip, agentconfig.DefaultHealthPort)
			// fetch makes one GET with the echo client and returns its raw output: "OK <body>" or "ERR <reason>",
			// then the summary. (The bodies span lines, which parseOutcome is not made for.)
			fetch := func(from, url, who string) string {
				argv := request{addr: url, timeout: 10 * time.Second, token: tokens[who]}.argv(drv)
				var out string
				var err error
				if from == "outside" {
					out, err = drv.OutsideExec(ctx, argv...)
				} else {
					out, err = drv.NodeExec(ctx, node, argv...)
				}
				Expect(err).NotTo(HaveOccurred(), "client on %s: %s", from, out)
				body, _, found := strings.Cut(out, "\nSUMMARY ")
				Expect(found).To(BeTrue(), "no summary from the client on %s:\n%s", from, out)
				return body
			}
			for _, c := range []struct {
				from, path, who string
				want            string // "OK" (an answer) or the client's error, e.g. "ERR http-401"
			}{
				{"node", "/metrics", "", "ERR http-401"},
				{"node", "/metrics", "nobody", "ERR http-403"},
				{"node", "/metrics", "debugger", "ERR http-403"},
				{"node", "/metrics", "prometheus", "OK"},
				{"node", "/debug/ipvs", "", "ERR http-401"},
				{"node", "/debug/ipvs", "nobody", "ERR http-403"},
				{"node", "/debug/ipvs", "prometheus", "ERR http-403"},
				{"node", "/debug/ipvs", "debugger", "OK"},
				// The outside host read the whole table before.
				{"outside", "/debug/ipvs", "", "ERR http-401"},
				{"outside", "/metrics", "", "ERR http-401"},
				{"outside", "/metrics", "prometheus", "OK"},
			} {
				got := fetch(c.from, metrics+c.path, c.who)
				what := fmt.Sprintf("GET %s from %s with the token of %q", c.path, c.from, c.who)
				if c.want != "OK" {
					Expect(got).To(Equal(c.want), what)
					continue
				}
				Expect(got).To(HavePrefix("OK "), what)
				if c.path == "/metrics" {
					Expect(got).To(ContainSubstring("# HELP "), what)
					continue
				}
				// What the agent believes it programmed is what the kernel holds for the Service.
				var served []string
				for _, l := range strings.Split(strings.TrimPrefix(got, "OK "), "\n") {
					if strings.Contains(l, svc.Spec.ClusterIP+":") {
						served = append(served, l)
					}
				}
				Expect(served).To(Equal(vsLines(save, svc.Spec.ClusterIP)), "%s: /debug/ipvs against ipvsadm -Sn:\n%s", what, got)
				Expect(served).To(ContainElement(fmt.Sprintf("-a -t %s:80 -r 10.244.1.250:9090 -m -w 1", svc.Spec.ClusterIP)))
			}

			// The health port: ok or not, nothing else, to anyone.
			for path, want := range map[string]string{"/readyz": "OK ok", "/healthz": "OK ok", "/metrics": "ERR http-404", "/debug/ipvs": "ERR http-404"} {
				Expect(fetch("outside", health+path, "")).To(Equal(want), "GET %s on the health port", path)
			}
			// Asked for detail, it names its checks and whether each passed, never why.
			got := fetch("outside", health+"/readyz?verbose", "")
			Expect(got).To(HavePrefix("OK [+]"))
			Expect(got).To(ContainSubstring("[+]programming ok"))
			Expect(got).NotTo(ContainSubstring(svc.Spec.ClusterIP))
			Expect(got).NotTo(ContainSubstring("10.244."))
		})
	})
}

// serviceAccountToken creates a ServiceAccount, binds it to the ClusterRole role (none if empty) until the
// spec ends, and returns a token for it from the TokenRequest API, as a Prometheus pod would mount.
func serviceAccountToken(ctx context.Context, drv Driver, ns, name, role string) string {
	GinkgoHelper()
	c := drv.Client()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	Expect(c.Create(ctx, sa)).To(Succeed())
	if role != "" {
		b := &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "dp-" + name + "-"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: name}},
		}
		Expect(c.Create(ctx, b)).To(Succeed())
		DeferCleanup(func(ctx SpecContext) { Expect(client.IgnoreNotFound(c.Delete(ctx, b))).To(Succeed()) })
	}
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}}
	Expect(c.SubResource("token").Create(ctx, sa, tr)).To(Succeed())
	Expect(tr.Status.Token).NotTo(BeEmpty())
	return tr.Status.Token
}

// nodeInternalIP is the node's InternalIP: where its host-network ports listen.
func nodeInternalIP(ctx context.Context, drv Driver, name string) string {
	GinkgoHelper()
	n := &corev1.Node{}
	Expect(drv.Client().Get(ctx, client.ObjectKey{Name: name}, n)).To(Succeed())
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			return a.Address
		}
	}
	Fail("node " + name + " has no InternalIP")
	return ""
}
