package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/ipvs-operator/ipvs-operator/controllers/operator"
)

// TestRunAgainstAPIServer runs the operator's run() as main does (leader election on, a kubeconfig from the
// environment, the DaemonSet cache limited to its namespace) against envtest, and checks that it takes the
// leader Lease and creates the agent DaemonSet, then stops cleanly.
func TestRunAgainstAPIServer(t *testing.T) {
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		t.Fatal("KUBEBUILDER_ASSETS is not set: it must name a directory holding etcd and kube-apiserver " +
			"(make envtest builds them into bin/k8s/1.37.1; `make test-unit` sets it)")
	}
	logs := io.Discard
	if testing.Verbose() {
		logs = os.Stderr
	}
	ctrl.SetLogger(zap.New(zap.WriteTo(logs), zap.UseDevMode(true)))

	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("starting envtest: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stopping envtest: %v", err)
		}
	})

	// ctrl.GetConfig reads $KUBECONFIG, as it would out of cluster.
	kubeconfig := clientcmdapi.NewConfig()
	kubeconfig.Clusters["envtest"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kubeconfig.AuthInfos["envtest"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData}
	kubeconfig.Contexts["envtest"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "envtest"}
	kubeconfig.CurrentContext = "envtest"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kubeconfig, path); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KUBECONFIG", path)

	c, err := client.New(cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const ns = "ipvs-operator-system"
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}

	opts := &options{
		metricsAddr: "0", probeAddr: "127.0.0.1:0", secureMetrics: true, leaderElect: true, namespace: ns,
		agentImage: "example.test/ipvs-operator:smoke", agentScope: operator.ScopeLabelled,
		agentDefaultScheduler: "rr", agentInterface: "ipvs0", agentAuditPeriod: time.Minute,
		agentMetricsPort: int(operator.DefaultAgentMetricsPort), agentHealthPort: int(operator.DefaultAgentHealthPort),
	}
	done := make(chan error, 1)
	go func() { done <- run(ctx, opts, nil) }()

	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		select {
		case err := <-done:
			t.Fatalf("run returned early: %v", err)
		default:
		}
		var lease coordinationv1.Lease
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: leaderElectionID}, &lease); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		var ds appsv1.DaemonSet
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: operator.AgentName}, &ds); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		return ds.Spec.Template.Spec.Containers[0].Image == "example.test/ipvs-operator:smoke", nil
	})
	if err != nil {
		t.Fatalf("waiting for the leader Lease and the agent DaemonSet: %v", err)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not return after its context was cancelled")
	}
}
