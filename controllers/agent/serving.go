package agent

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"sync"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
)

// The agent checks who scrapes its metrics port: it runs on the host network, so that port is open on
// every address of the node (ClusterIPs included) to pods and to whatever else reaches the node.
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create

// DebugIPVSPath is where the metrics server serves the agent's IPVS table. Who reads it needs `get` on this
// non-resource URL (ClusterRole agent-debug-reader), apart from /metrics: the table lists every ClusterIP
// and pod address the node serves, which a metrics scraper has no need to see.
const DebugIPVSPath = "/debug/ipvs"

// MetricsServerOptions are the agent's metrics server on addr: HTTPS (a self-signed certificate made at
// start, see selfSignedCertificate), and every request authenticated with the API server (TokenReview) and
// authorized (SubjectAccessReview on the request's path and verb) by controller-runtime's filter, as the
// operator's /metrics is. The filter covers the extra handlers too: debug is served at DebugIPVSPath.
// HTTP/2 is off, as in the operator (its rapid-reset and stream floods, CVE-2023-44487 and CVE-2023-39325).
func MetricsServerOptions(addr string, debug http.Handler) metricsserver.Options {
	return metricsserver.Options{
		BindAddress:    addr,
		SecureServing:  true,
		FilterProvider: filters.WithAuthenticationAndAuthorization,
		TLSOpts: []func(*tls.Config){func(c *tls.Config) {
			c.NextProtos = []string{"http/1.1"}
			c.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return selfSignedCertificate() }
		}},
		ExtraHandlers: map[string]http.Handler{DebugIPVSPath: debug},
	}
}

// DebugHandler serves programmed(), the table the engine believes it programmed (ipvs/syncer.Syncer's
// Programmed), in `ipvsadm -Sn` notation, so a user without ipvsadm on the node can see what the agent
// did. It reads memory, never the kernel: a request cannot make the agent dump the kernel's table. Compare
// with `ipvsadm -Sn` on the node to see drift the next audit will repair.
func DebugHandler(programmed func() []ipvs.VirtualServer) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte(ipvs.Render(programmed())))
	})
}

// selfSignedCertificate is the metrics server's certificate, made once on first use: ECDSA P-256 for
// localhost and 127.0.0.1, as controller-runtime's fallback names it. That fallback makes an RSA-2048 key,
// which costs about 1.5 s of CPU in the lab's emulated VM on every agent start, on every node at once
// after a roll-out; a P-256 key takes milliseconds. Scrapers authenticate the agent by other means (the
// certificate is self-signed either way), so nothing is lost.
var selfSignedCertificate = sync.OnceValues(func() (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("metrics server certificate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("metrics server certificate serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "localhost"},
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("metrics server certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("metrics server certificate: %w", err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
})
