// Package pki makes the lab's certificates and keys (one CA for the API server, its clients, the
// kubelets' API and ServiceAccount tokens) and the admin kubeconfig.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/ipvs-operator/ipvs-operator/test/lab/topology"
)

// PKI holds the lab's certificates and keys, PEM encoded, and the files they were written to.
type PKI struct {
	Dir                   string
	CACert, CAKey         string // files
	ServerCert, ServerKey string
	AdminCert, AdminKey   string
	SAKey, SAPub          string
	// kubeletCert/Key serve the lab kubelets' API (all nodes share it); kubeletClientCert/Key are the
	// API server's client certificate towards them.
	KubeletCert, KubeletKey             string
	KubeletClientCert, KubeletClientKey string
	CAPEM, AdminCertPEM                 []byte
	AdminKeyPEM                         []byte
}

func newKey() (*ecdsa.PrivateKey, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }

func keyPEM(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func certPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	return n
}

// Generate makes a CA, the kube-apiserver's serving certificate, an admin client certificate
// (system:masters) and the ServiceAccount token signing key.
func Generate(dir string) (*PKI, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	now := time.Now().Add(-time.Hour)
	caKey, err := newKey()
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "ipvs-operator-lab-ca"},
		NotBefore:             now,
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		return nil, err
	}
	ca, _ := x509.ParseCertificate(caDER)
	// issue signs a leaf certificate with the CA: every leaf has the same validity and key usage.
	issue := func(tmpl *x509.Certificate) ([]byte, []byte, error) {
		tmpl.SerialNumber = serial()
		tmpl.NotBefore, tmpl.NotAfter = now, now.Add(10*365*24*time.Hour)
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
		k, err := newKey()
		if err != nil {
			return nil, nil, err
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, k.Public(), crypto.Signer(caKey))
		if err != nil {
			return nil, nil, err
		}
		kp, err := keyPEM(k)
		return certPEM(der), kp, err
	}
	serverPEM, serverKeyPEM, err := issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP(topology.GuestAPIServerHost), net.ParseIP(topology.KubernetesServiceIP)},
		DNSNames: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc.cluster.local"},
	})
	if err != nil {
		return nil, err
	}
	adminPEM, adminKeyPEM, err := issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "lab-admin", Organization: []string{"system:masters"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return nil, err
	}
	// The API server dials a kubelet at its Node's ExternalIP, 127.0.0.1 (the VM's port forward).
	kubeletIPs := []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP(topology.GuestIP)}
	for _, n := range topology.Nodes {
		kubeletIPs = append(kubeletIPs, net.ParseIP(n.IP), net.ParseIP(n.IPv6))
	}
	kubeletPEM, kubeletKeyPEM, err := issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "lab-kubelet"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: kubeletIPs,
		DNSNames:    []string{"localhost"},
	})
	if err != nil {
		return nil, err
	}
	kubeletClientPEM, kubeletClientKeyPEM, err := issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver-kubelet-client"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return nil, err
	}
	saKey, err := newKey()
	if err != nil {
		return nil, err
	}
	saKeyPEM, err := keyPEM(saKey)
	if err != nil {
		return nil, err
	}
	saPubDER, err := x509.MarshalPKIXPublicKey(saKey.Public())
	if err != nil {
		return nil, err
	}
	caKeyPEM, err := keyPEM(caKey)
	if err != nil {
		return nil, err
	}
	p := &PKI{Dir: dir, CAPEM: certPEM(caDER), AdminCertPEM: adminPEM, AdminKeyPEM: adminKeyPEM}
	files := []struct {
		dst  *string
		name string
		data []byte
	}{
		{&p.CACert, "ca.crt", p.CAPEM},
		{&p.CAKey, "ca.key", caKeyPEM},
		{&p.ServerCert, "apiserver.crt", serverPEM},
		{&p.ServerKey, "apiserver.key", serverKeyPEM},
		{&p.AdminCert, "admin.crt", adminPEM},
		{&p.AdminKey, "admin.key", adminKeyPEM},
		{&p.KubeletCert, "kubelet.crt", kubeletPEM},
		{&p.KubeletKey, "kubelet.key", kubeletKeyPEM},
		{&p.KubeletClientCert, "apiserver-kubelet-client.crt", kubeletClientPEM},
		{&p.KubeletClientKey, "apiserver-kubelet-client.key", kubeletClientKeyPEM},
		{&p.SAKey, "sa.key", saKeyPEM},
		{&p.SAPub, "sa.pub", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPubDER})},
	}
	for _, f := range files {
		*f.dst = filepath.Join(dir, f.name)
		if err := os.WriteFile(*f.dst, f.data, 0o600); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// WriteKubeconfig writes an admin kubeconfig for server (with the certificates inline).
func (p *PKI) WriteKubeconfig(path, server string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["lab"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: p.CAPEM}
	cfg.AuthInfos["lab-admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: p.AdminCertPEM, ClientKeyData: p.AdminKeyPEM}
	cfg.Contexts["lab"] = &clientcmdapi.Context{Cluster: "lab", AuthInfo: "lab-admin", Namespace: "default"}
	cfg.CurrentContext = "lab"
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("lab: writing %s: %w", path, err)
	}
	return os.Chmod(path, 0o600)
}
