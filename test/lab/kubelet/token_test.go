package kubelet

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/clientcmd"
)

func TestRenderKubeconfigUsesTokenFile(t *testing.T) {
	access := clusterAccess{Server: "https://10.0.2.100:6443", CAData: []byte("-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n")}
	data, err := renderKubeconfig(access, "/run/pods/x/serviceaccount/token", "ipvs-system")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.Load(data)
	if err != nil {
		t.Fatalf("kubeconfig does not load: %v", err)
	}
	ctx := cfg.Contexts[cfg.CurrentContext]
	if ctx == nil || ctx.Namespace != "ipvs-system" {
		t.Fatalf("context = %+v", ctx)
	}
	cluster, user := cfg.Clusters[ctx.Cluster], cfg.AuthInfos[ctx.AuthInfo]
	if cluster.Server != access.Server || string(cluster.CertificateAuthorityData) != string(access.CAData) {
		t.Errorf("cluster = %+v", cluster)
	}
	if user.TokenFile != "/run/pods/x/serviceaccount/token" || user.Token != "" || user.ClientCertificateData != nil {
		t.Errorf("user must authenticate with the token file only: %+v", user)
	}
}

func TestWriteServiceAccountFiles(t *testing.T) {
	dir := t.TempDir()
	files := serviceAccountFilesIn(dir)
	access := clusterAccess{Server: "https://10.0.2.100:6443", CAData: []byte("CA")}
	if err := writeServiceAccountFiles(files, access, "ns1", "tok-1"); err != nil {
		t.Fatal(err)
	}
	if err := writeServiceAccountFiles(files, access, "ns1", "tok-2"); err != nil { // refresh
		t.Fatal(err)
	}
	for path, want := range map[string]string{files.Token: "tok-2", files.CA: "CA", files.Namespace: "ns1"} {
		b, err := os.ReadFile(path)
		if err != nil || string(b) != want {
			t.Errorf("%s = %q, %v; want %q", path, b, err, want)
		}
	}
	// The kubeconfig authenticates as the token: client-go builds a config from it.
	rc, err := clientcmd.BuildConfigFromFlags("", files.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if rc.Host != access.Server || rc.BearerTokenFile != files.Token {
		t.Errorf("rest config host=%q tokenFile=%q", rc.Host, rc.BearerTokenFile)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(files.Dir, ".*")); len(leftovers) > 0 {
		t.Errorf("temporary files left: %v", leftovers)
	}
}

func TestRefreshAtEightyPercent(t *testing.T) {
	issued := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if got := refreshAt(issued, issued.Add(time.Hour)); !got.Equal(issued.Add(48 * time.Minute)) {
		t.Errorf("refreshAt = %v", got)
	}
}

func TestKubernetesServiceEnv(t *testing.T) {
	pod := &corev1.Pod{}
	got := envMap(podServiceEnv(pod, nil, clusterAccess{Server: "https://10.0.2.100:6443"}))
	if got["KUBERNETES_SERVICE_HOST"] != "10.0.2.100" || got["KUBERNETES_SERVICE_PORT"] != "6443" ||
		got["KUBERNETES_SERVICE_PORT_HTTPS"] != "6443" || got["KUBERNETES_PORT"] != "tcp://10.0.2.100:6443" {
		t.Errorf("env = %v", got)
	}
	if got := envMap(podServiceEnv(pod, nil, clusterAccess{Server: "https://api.example"})); got["KUBERNETES_SERVICE_PORT"] != "443" {
		t.Errorf("default port: %v", got)
	}
	if serviceAccountName(pod) != "default" {
		t.Error("a pod without serviceAccountName uses default")
	}
}
