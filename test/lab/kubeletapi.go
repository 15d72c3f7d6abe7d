package lab

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/ipvs-operator/ipvs-operator/test/lab/host"
	"github.com/ipvs-operator/ipvs-operator/test/lab/pki"
	"github.com/ipvs-operator/ipvs-operator/test/lab/topology"
)

// guestPKI is where the kubelets find their serving certificate and the CA in the guest.
const guestPKI = GuestShare + "/pki"

// shareKubeletPKI copies the kubelets' serving certificate and the CA into the share.
func shareKubeletPKI(p *pki.PKI, shareDir string) error {
	dir := filepath.Join(shareDir, "pki")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for name, src := range map[string]string{"kubelet.crt": p.KubeletCert, "kubelet.key": p.KubeletKey, "ca.crt": p.CACert} {
		if err := host.CopyFile(src, filepath.Join(dir, name), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// kubeletAPIArgs are the lab kubelet flags that serve node i's API behind host port hostPort.
func kubeletAPIArgs(i, hostPort int) string {
	return strings.Join([]string{
		fmt.Sprintf("--serve=%s:%d", topology.GuestIP, topology.GuestKubeletPort+i),
		"--serve-netns=/proc/1/ns/net",
		"--tls-cert-file=" + guestPKI + "/kubelet.crt",
		"--tls-private-key-file=" + guestPKI + "/kubelet.key",
		"--client-ca-file=" + guestPKI + "/ca.crt",
		fmt.Sprintf("--advertise-address=127.0.0.1:%d", hostPort),
	}, " ")
}

// Kubectl is the kubectl binary of the lab's Kubernetes version (use it with Kubeconfig).
func (l *Lab) Kubectl() string { return filepath.Join(l.assets.KubeBinDir, "kubectl") }
