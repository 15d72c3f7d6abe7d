package lab

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
)

// Fixed addresses of the lab.
const (
	// GuestAPIServerHost is where the guest reaches the host's kube-apiserver (a qemu guest forward).
	GuestAPIServerHost = "10.0.2.100"
	// GuestAPIServerPort is the port of GuestAPIServerHost in the guest kubeconfig.
	GuestAPIServerPort = 6443
	// GuestIP is the guest's address on the qemu user network; labd listens on GuestIP:LabdPort.
	GuestIP  = "10.0.2.15"
	LabdPort = 7000
	// ServiceCIDR is the cluster's Service range; 10.96.0.1 is the kubernetes Service.
	ServiceCIDR = "10.96.0.0/16"
	// PodCIDR covers every node's pod range (node-a 10.244.1.0/24, node-b 10.244.2.0/24).
	PodCIDR = "10.244.0.0/16"
	// NodeCIDR is the node network on bridge lab0 (the guest's root netns is 192.168.100.1).
	NodeCIDR = "192.168.100.0/24"
	// OutsideIP is the address of the outside host, which is not a cluster member.
	OutsideIP = "192.168.100.200"
	// NodeRootIP is the guest root netns's address on the node network (bridge lab0).
	NodeRootIP = "192.168.100.1"

	// The IPv6 family of the dual-stack lab, the same layout in unique local addresses. IPv4 comes first
	// everywhere (Service CIDRs, pod and node addresses), so a Service that asks for no family stays IPv4.

	// ServiceCIDRv6 is the Service range of IPv6 ClusterIPs (kube-apiserver refuses one wider than /108).
	ServiceCIDRv6 = "fd00:10:96::/112"
	// PodCIDRv6 covers every node's IPv6 pod range (node-a fd00:10:244:1::/64, node-b fd00:10:244:2::/64).
	PodCIDRv6 = "fd00:10:244::/56"
	// NodeCIDRv6, NodeRootIPv6 and OutsideIPv6 are NodeCIDR, NodeRootIP and OutsideIP in IPv6.
	NodeCIDRv6   = "fd00:192:168:100::/64"
	NodeRootIPv6 = "fd00:192:168:100::1"
	OutsideIPv6  = "fd00:192:168:100::200"
)

// NodeInfo describes one lab node.
type NodeInfo struct {
	Name    string
	IP      string // on the node network (its netns's eth0)
	PodCIDR string // on its cbr0 bridge, gateway .1
	// IPv6 and PodCIDRv6 are the same in IPv6 (gateway ::1); a pod's IPv6 address has its IPv4 host part.
	IPv6, PodCIDRv6 string
}

// LabNodes are the lab's nodes; their network namespaces carry the same names.
var LabNodes = []NodeInfo{
	{Name: "node-a", IP: "192.168.100.11", PodCIDR: "10.244.1.0/24", IPv6: "fd00:192:168:100::11", PodCIDRv6: "fd00:10:244:1::/64"},
	{Name: "node-b", IP: "192.168.100.12", PodCIDR: "10.244.2.0/24", IPv6: "fd00:192:168:100::12", PodCIDRv6: "fd00:10:244:2::/64"},
}

// ServiceCIDRs is the cluster's dual-stack Service range as kube-apiserver's flag takes it (IPv4 first).
func ServiceCIDRs() string { return ServiceCIDR + "," + ServiceCIDRv6 }

// PodCIDRs is the cluster's dual-stack pod range, as kube-controller-manager's --cluster-cidr takes it.
func PodCIDRs() string { return PodCIDR + "," + PodCIDRv6 }

// pki holds the lab's certificates and keys, PEM encoded, and the files they were written to.
type pki struct {
	dir                   string
	caCert, caKey         string // files
	serverCert, serverKey string
	adminCert, adminKey   string
	saKey, saPub          string
	// kubeletCert/Key serve the lab kubelets' API (all nodes share it); kubeletClientCert/Key are the
	// API server's client certificate towards them.
	kubeletCert, kubeletKey             string
	kubeletClientCert, kubeletClientKey string
	caPEM, adminCertPEM                 []byte
	adminKeyPEM                         []byte
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

// generatePKI makes a CA, the kube-apiserver's serving certificate, an admin client certificate
// (system:masters) and the ServiceAccount token signing key.
func generatePKI(dir string) (*pki, error) {
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
	issue := func(tmpl *x509.Certificate) ([]byte, []byte, error) {
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
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:    now,
		NotAfter:     now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP(GuestAPIServerHost), net.ParseIP("10.96.0.1")},
		DNSNames: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc.cluster.local"},
	})
	if err != nil {
		return nil, err
	}
	adminPEM, adminKeyPEM, err := issue(&x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "lab-admin", Organization: []string{"system:masters"}},
		NotBefore:    now,
		NotAfter:     now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return nil, err
	}
	// The API server dials a kubelet at its Node's ExternalIP, 127.0.0.1 (the VM's port forward).
	kubeletIPs := []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP(GuestIP)}
	for _, n := range LabNodes {
		kubeletIPs = append(kubeletIPs, net.ParseIP(n.IP), net.ParseIP(n.IPv6))
	}
	kubeletPEM, kubeletKeyPEM, err := issue(&x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "lab-kubelet"},
		NotBefore:    now,
		NotAfter:     now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  kubeletIPs,
		DNSNames:     []string{"localhost"},
	})
	if err != nil {
		return nil, err
	}
	kubeletClientPEM, kubeletClientKeyPEM, err := issue(&x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "kube-apiserver-kubelet-client"},
		NotBefore:    now,
		NotAfter:     now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
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
	p := &pki{dir: dir, caPEM: certPEM(caDER), adminCertPEM: adminPEM, adminKeyPEM: adminKeyPEM}
	files := []struct {
		dst  *string
		name string
		data []byte
	}{
		{&p.caCert, "ca.crt", p.caPEM},
		{&p.caKey, "ca.key", caKeyPEM},
		{&p.serverCert, "apiserver.crt", serverPEM},
		{&p.serverKey, "apiserver.key", serverKeyPEM},
		{&p.adminCert, "admin.crt", adminPEM},
		{&p.adminKey, "admin.key", adminKeyPEM},
		{&p.kubeletCert, "kubelet.crt", kubeletPEM},
		{&p.kubeletKey, "kubelet.key", kubeletKeyPEM},
		{&p.kubeletClientCert, "apiserver-kubelet-client.crt", kubeletClientPEM},
		{&p.kubeletClientKey, "apiserver-kubelet-client.key", kubeletClientKeyPEM},
		{&p.saKey, "sa.key", saKeyPEM},
		{&p.saPub, "sa.pub", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPubDER})},
	}
	for _, f := range files {
		*f.dst = filepath.Join(dir, f.name)
		if err := os.WriteFile(*f.dst, f.data, 0o600); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// writeKubeconfig writes an admin kubeconfig for server (with the certificates inline).
func (p *pki) writeKubeconfig(path, server string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["lab"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: p.caPEM}
	cfg.AuthInfos["lab-admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: p.adminCertPEM, ClientKeyData: p.adminKeyPEM}
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
