package kubelet

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// tokenLifetime is the bound token's requested lifetime; it is refreshed at 80%, as the kubelet does.
const tokenLifetime = time.Hour

// serviceAccountFiles are the per-pod files a process uses to talk to the API server as its ServiceAccount.
type serviceAccountFiles struct {
	Dir        string // the serviceaccount directory: token, ca.crt, namespace
	Token      string
	CA         string
	Namespace  string
	Kubeconfig string
}

func serviceAccountFilesIn(dir string) serviceAccountFiles {
	sa := filepath.Join(dir, "serviceaccount")
	return serviceAccountFiles{
		Dir:        sa,
		Token:      filepath.Join(sa, "token"),
		CA:         filepath.Join(sa, "ca.crt"),
		Namespace:  filepath.Join(sa, "namespace"),
		Kubeconfig: filepath.Join(dir, "kubeconfig"),
	}
}

// clusterAccess is how pods reach the API server: its URL and the CA that signs its certificate.
type clusterAccess struct {
	Server   string
	CAData   []byte
	Insecure bool
}

// serviceHostPort is KUBERNETES_SERVICE_HOST and _PORT for a server URL.
func (a clusterAccess) serviceHostPort() (string, string, error) {
	u, err := url.Parse(a.Server)
	if err != nil {
		return "", "", err
	}
	host, port := u.Hostname(), u.Port()
	if port == "" {
		port = "443"
	}
	if host == "" {
		return "", "", fmt.Errorf("server %q has no host", a.Server)
	}
	return host, port, nil
}

// renderKubeconfig is a kubeconfig that authenticates with the token in tokenFile; client-go re-reads that
// file, so refreshing the token needs no new kubeconfig.
func renderKubeconfig(access clusterAccess, tokenFile, namespace string) ([]byte, error) {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["lab"] = &clientcmdapi.Cluster{
		Server:                   access.Server,
		CertificateAuthorityData: access.CAData,
		InsecureSkipTLSVerify:    access.Insecure,
	}
	cfg.AuthInfos["serviceaccount"] = &clientcmdapi.AuthInfo{TokenFile: tokenFile}
	cfg.Contexts["lab"] = &clientcmdapi.Context{Cluster: "lab", AuthInfo: "serviceaccount", Namespace: namespace}
	cfg.CurrentContext = "lab"
	return clientcmd.Write(*cfg)
}

// writeFileAtomic replaces path so that a reader never sees a partly written token.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// writeServiceAccountFiles writes the token, CA, namespace and kubeconfig.
func writeServiceAccountFiles(files serviceAccountFiles, access clusterAccess, namespace, token string) error {
	kubeconfig, err := renderKubeconfig(access, files.Token, namespace)
	if err != nil {
		return fmt.Errorf("rendering kubeconfig: %w", err)
	}
	for _, f := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{files.Token, []byte(token), 0o600},
		{files.CA, access.CAData, 0o644},
		{files.Namespace, []byte(namespace), 0o644},
		{files.Kubeconfig, kubeconfig, 0o600},
	} {
		if err := writeFileAtomic(f.path, f.data, f.mode); err != nil {
			return fmt.Errorf("writing %s: %w", f.path, err)
		}
	}
	return nil
}

// requestToken asks for a token of the pod's ServiceAccount, bound to the pod (it dies with the pod).
// Equivalent to: `kubectl create token SA --bound-object-kind Pod --bound-object-name POD --duration 1h`.
func requestToken(ctx context.Context, client kubernetes.Interface, pod *corev1.Pod) (*authenticationv1.TokenRequestStatus, error) {
	seconds := int64(tokenLifetime / time.Second)
	tr, err := client.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, serviceAccountName(pod),
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
			ExpirationSeconds: &seconds,
			BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
		}}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("requesting a token for serviceaccount %s/%s: %w", pod.Namespace, serviceAccountName(pod), err)
	}
	return &tr.Status, nil
}

func serviceAccountName(pod *corev1.Pod) string {
	if pod.Spec.ServiceAccountName != "" {
		return pod.Spec.ServiceAccountName
	}
	return "default"
}

// refreshAt is when a token issued now and expiring at exp should be replaced: at 80% of its life.
func refreshAt(issued, exp time.Time) time.Time {
	return issued.Add(exp.Sub(issued) * 8 / 10)
}
