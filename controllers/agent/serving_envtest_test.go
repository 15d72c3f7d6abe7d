package agent_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/yaml"

	"github.com/ipvs-operator/ipvs-operator/controllers/agent"
	"github.com/ipvs-operator/ipvs-operator/ipvs"
)

// The agent's metrics port is open on every address of its node (host network). These specs serve it as the
// agent does, with the agent's own identity bound to the shipped agent role, and knock with the tokens of
// ServiceAccounts bound to the shipped reader roles: the envtest API server reviews the tokens (it has a
// service-account issuer) and authorizes with RBAC.
var _ = Describe("the agent's metrics port", Ordered, func() {
	const ns = "metrics-auth"
	var (
		base   string                     // https://127.0.0.1:PORT
		tokens = map[string]string{}      // ServiceAccount -> token
		stop   = map[string]func(){}      // running servers
		table  = []ipvs.VirtualServer{{}} // what the debug handler serves
	)

	BeforeAll(func(ctx SpecContext) {
		cs := kubernetes.NewForConfigOrDie(cfg)
		Expect(k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
		// The roles as shipped (config/rbac), bound as config/rbac and config/prometheus bind them.
		roles := map[string]string{}
		for _, f := range []string{"agent/role.yaml", "metrics_reader_role.yaml", "agent/debug_reader_role.yaml"} {
			role := &rbacv1.ClusterRole{}
			raw, err := os.ReadFile(filepath.Join("..", "..", "config", "rbac", f))
			Expect(err).NotTo(HaveOccurred())
			Expect(yaml.Unmarshal(raw, role)).To(Succeed())
			role.Name = "metrics-auth-" + role.Name // apart from other specs' objects
			Expect(k8s.Create(ctx, role)).To(Succeed())
			roles[f] = role.Name
		}
		for sa, role := range map[string]string{
			"agent":      roles["agent/role.yaml"],
			"prometheus": roles["metrics_reader_role.yaml"],
			"debugger":   roles["agent/debug_reader_role.yaml"],
			"nobody":     "",
			"bare-agent": "", // an agent without its role: it cannot review tokens
		} {
			Expect(k8s.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: sa}})).To(Succeed())
			if role != "" {
				Expect(k8s.Create(ctx, &rbacv1.ClusterRoleBinding{
					ObjectMeta: metav1.ObjectMeta{Name: "metrics-auth-" + sa},
					RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
					Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: sa}},
				})).To(Succeed())
			}
			tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
				Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}}, metav1.CreateOptions{})
			Expect(err).NotTo(HaveOccurred())
			tokens[sa] = tr.Status.Token
		}
		tokens["garbage"] = "not-a-token"
		table = []ipvs.VirtualServer{{
			Service:      ipvs.Service{ServiceKey: key("10.96.0.10", 80, ipvs.TCP), Scheduler: "rr"},
			Destinations: []ipvs.Destination{{DestinationKey: ipvs.DestinationKey{Address: netip.MustParseAddr("10.244.1.5"), Port: 8080}, Weight: 1}},
		}}
		base, stop["agent"] = serveMetrics(ctx, tokens["agent"], func() []ipvs.VirtualServer { return table })
	})
	AfterAll(func() {
		for _, s := range stop {
			s()
		}
	})

	DescribeTable("answers by token and path",
		func(ctx SpecContext, path, who string, want int, body string) {
			code, got := get(ctx, base+path, tokens[who])
			Expect(code).To(Equal(want), "GET %s as %q: %s", path, who, got)
			Expect(got).To(ContainSubstring(body))
			if want != http.StatusOK {
				Expect(got).NotTo(ContainSubstring("10.96.0.10"), "a refusal leaked the table")
				Expect(got).NotTo(ContainSubstring("ipvs_operator_"), "a refusal leaked metrics")
			}
		},
		Entry("/metrics without a token", "/metrics", "", http.StatusUnauthorized, "Unauthorized"),
		Entry("/metrics with a token without rights", "/metrics", "nobody", http.StatusForbidden, "Authorization denied"),
		Entry("/metrics with the metrics-reader's token", "/metrics", "prometheus", http.StatusOK, "ipvs_operator_agent_sync_duration_seconds"),
		Entry("/metrics with only the debug reader's token", "/metrics", "debugger", http.StatusForbidden, "Authorization denied"),
		Entry("/debug/ipvs without a token", agent.DebugIPVSPath, "", http.StatusUnauthorized, "Unauthorized"),
		Entry("/debug/ipvs with a token without rights", agent.DebugIPVSPath, "nobody", http.StatusForbidden, "Authorization denied"),
		Entry("/debug/ipvs with the metrics-reader's token", agent.DebugIPVSPath, "prometheus", http.StatusForbidden, "Authorization denied"),
		Entry("/debug/ipvs with the debug reader's token", agent.DebugIPVSPath, "debugger", http.StatusOK,
			"-A -t 10.96.0.10:80 -s rr\n-a -t 10.96.0.10:80 -r 10.244.1.5:8080 -m -w 1\n"),
		// The API server refuses to review a token that is not a JWT at all, and controller-runtime's filter
		// answers that with 500 rather than 401: still nothing served.
		Entry("/debug/ipvs with a garbage token", agent.DebugIPVSPath, "garbage", http.StatusInternalServerError, "Authentication failed"),
	)

	It("does not speak plain HTTP", func(ctx SpecContext) {
		code, body := get(ctx, strings.Replace(base, "https://", "http://", 1)+"/metrics", "")
		Expect(code).To(Equal(http.StatusBadRequest), body) // Go's TLS server answers plain HTTP with a 400
		Expect(body).NotTo(ContainSubstring("ipvs_operator_"))
	})

	It("serves a P-256 certificate for localhost, made at start rather than controller-runtime's RSA-2048 one", func(ctx SpecContext) {
		conn, err := (&tls.Dialer{Config: &tls.Config{InsecureSkipVerify: true}}).DialContext(ctx, "tcp", strings.TrimPrefix(base, "https://")) //nolint:gosec // test client
		Expect(err).NotTo(HaveOccurred())
		defer conn.Close()
		leaf := conn.(*tls.Conn).ConnectionState().PeerCertificates[0]
		Expect(leaf.PublicKeyAlgorithm).To(Equal(x509.ECDSA), "the agent's certificate key")
		Expect(leaf.VerifyHostname("localhost")).To(Succeed())
		Expect(leaf.VerifyHostname("127.0.0.1")).To(Succeed())
	})

	It("needs the agent role to review tokens: without it nobody gets in", func(ctx SpecContext) {
		bare, s := serveMetrics(ctx, tokens["bare-agent"], func() []ipvs.VirtualServer { return table })
		stop["bare-agent"] = s
		code, body := get(ctx, bare+"/metrics", tokens["prometheus"])
		Expect(code).To(Equal(http.StatusInternalServerError), body)
		Expect(body).To(ContainSubstring("Authentication failed"))
	})
})

// serveMetrics starts the agent's metrics server on a free loopback port, as the ServiceAccount whose token
// is given, and waits until it answers. It returns its base URL and a function that stops it.
func serveMetrics(ctx context.Context, token string, programmed func() []ipvs.VirtualServer) (string, func()) {
	GinkgoHelper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	addr := l.Addr().String()
	Expect(l.Close()).To(Succeed())

	as := rest.AnonymousClientConfig(cfg)
	as.BearerToken = token
	httpClient, err := rest.HTTPClientFor(as)
	Expect(err).NotTo(HaveOccurred())
	srv, err := metricsserver.NewServer(agent.MetricsServerOptions(addr, agent.DebugHandler(programmed)), as, httpClient)
	Expect(err).NotTo(HaveOccurred())
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer GinkgoRecover()
		defer close(done)
		Expect(srv.Start(ctx)).To(Succeed())
	}()
	base := "https://" + addr
	Eventually(func() int { code, _ := get(ctx, base+"/metrics", ""); return code }).
		WithTimeout(10 * time.Second).WithPolling(50 * time.Millisecond).ShouldNot(BeZero())
	return base, func() { cancel(); <-done }
}

// get makes a GET with the bearer token (none if empty) and returns the status (0: no answer) and body.
func get(ctx context.Context, url, token string) (int, string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	Expect(err).NotTo(HaveOccurred())
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		// The agent's certificate is self-signed; what is checked here is who may read, not who serves.
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // test client
	}}
	resp, err := c.Do(req)
	if err != nil {
		return 0, fmt.Sprint(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
