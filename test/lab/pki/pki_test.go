package pki

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/ipvs-operator/ipvs-operator/test/lab/topology"
)

func TestPKIAndKubeconfig(t *testing.T) {
	dir := t.TempDir()
	p, err := Generate(filepath.Join(dir, "pki"))
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(p.ServerCert)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	ips := make([]string, 0, len(cert.IPAddresses))
	for _, ip := range cert.IPAddresses {
		ips = append(ips, ip.String())
	}
	for _, want := range []string{"127.0.0.1", topology.GuestAPIServerHost, topology.KubernetesServiceIP} {
		if !strings.Contains(strings.Join(ips, " "), want) {
			t.Errorf("serving certificate lacks IP SAN %s: %v", want, ips)
		}
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(p.CAPEM)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: "kubernetes.default.svc"}); err != nil {
		t.Errorf("serving certificate does not verify: %v", err)
	}
	kc := filepath.Join(dir, "kubeconfig")
	if err := p.WriteKubeconfig(kc, "https://10.0.2.100:6443"); err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Host != "https://10.0.2.100:6443" || len(cfg.CertData) == 0 || len(cfg.KeyData) == 0 || len(cfg.CAData) == 0 {
		t.Fatalf("kubeconfig: %+v", cfg)
	}
}
