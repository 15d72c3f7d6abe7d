package operator

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/ipvs-operator/ipvs-operator/api/v1alpha1"
)

// This suite runs both operator reconcilers in a manager against a real kube-apiserver and etcd (envtest), the
// way cmd/operator wires them. There is no kube-controller-manager: the DaemonSet makes no pods and deleted
// objects are not garbage-collected, which is all these specs need.

const operatorNamespace = "ipvs-operator-system"

var (
	cfg         *rest.Config
	k8sClient   client.Client
	testEnv     *envtest.Environment
	ctx         context.Context
	cancel      context.CancelFunc
	agentConfig AgentConfig
	scheme      = runtime.NewScheme()
)

func TestOperator(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Operator controllers suite")
}

var _ = BeforeSuite(func() {
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))

	// Fail, never skip: a suite that silently does not run proves nothing.
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	Expect(assets).NotTo(BeEmpty(), "KUBEBUILDER_ASSETS is not set: it must name a directory holding etcd and "+
		"kube-apiserver (make envtest builds them into bin/k8s/1.37.1; `make test-unit` sets it)")
	for _, bin := range []string{"etcd", "kube-apiserver"} {
		_, err := os.Stat(filepath.Join(assets, bin))
		Expect(err).NotTo(HaveOccurred(), "KUBEBUILDER_ASSETS=%s has no %s (make envtest builds it)", assets, bin)
	}

	ctx, cancel = context.WithCancel(context.TODO())
	// The machines that run this suite are small and often busy.
	SetDefaultEventuallyTimeout(30 * time.Second)
	SetDefaultEventuallyPollingInterval(100 * time.Millisecond)

	Expect(clientgoscheme.AddToScheme(scheme)).To(Succeed())
	Expect(v1alpha1.AddToScheme(scheme)).To(Succeed())

	By("starting the test control plane")
	testEnv = &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		Scheme:                scheme,
	}
	var err error
	cfg, err = testEnv.Start()
	Expect(err).NotTo(HaveOccurred())
	Expect(cfg).NotTo(BeNil())

	k8sClient, err = client.New(cfg, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())
	Expect(k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: operatorNamespace}})).To(Succeed())

	By("starting the manager with both reconcilers")
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{
			&appsv1.DaemonSet{}: {Namespaces: map[string]cache.Config{operatorNamespace: {}}},
		}},
	})
	Expect(err).NotTo(HaveOccurred())

	agentConfig = AgentConfig{Namespace: operatorNamespace, Image: "example.test/ipvs-operator:envtest"}.WithDefaults()
	Expect(agentConfig.Validate()).To(Succeed())
	Expect((&AgentDaemonSetReconciler{Client: mgr.GetClient(), Config: agentConfig}).SetupWithManager(mgr)).To(Succeed())
	Expect((&ServicePolicyReconciler{
		Client:   mgr.GetClient(),
		Recorder: mgr.GetEventRecorder("ipvs-operator"),
	}).SetupWithManager(mgr)).To(Succeed())

	go func() {
		defer GinkgoRecover()
		Expect(mgr.Start(ctx)).To(Succeed(), "the manager stopped with an error")
	}()
})

var _ = AfterSuite(func() {
	By("stopping the manager and the test control plane")
	if cancel != nil {
		cancel()
	}
	if testEnv != nil {
		Expect(testEnv.Stop()).To(Succeed())
	}
})
