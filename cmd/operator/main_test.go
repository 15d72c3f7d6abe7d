package main

import (
	"context"
	"flag"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/ipvs-operator/ipvs-operator/api/agentconfig"
	"github.com/ipvs-operator/ipvs-operator/api/v1alpha1"
	"github.com/ipvs-operator/ipvs-operator/controllers/operator"
)

// TestRunAgainstAPIServer runs the operator's run() as main does (leader election on, a kubeconfig from the
// environment, the DaemonSet cache limited to its namespace) against envtest, AS the operator's ServiceAccount
// with only the RBAC of config/rbac/role.yaml (generated from the markers by `make manifests`): it must take
// the leader Lease, create the agent DaemonSet, write a ServicePolicy's status and record its events, warn
// that a NodePort Service's node port is not served, then stop cleanly. A missing permission fails here
// rather than in a cluster.
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

	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const ns = "ipvs-operator-system"
	for _, name := range []string{ns, "shop"} {
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
			t.Fatal(err)
		}
	}
	grantOperatorRBAC(ctx, t, c, ns, operatorServiceAccount)

	// ctrl.GetConfig reads $KUBECONFIG, as it would out of cluster; the user impersonates the operator's
	// ServiceAccount (the test's own user is a cluster admin).
	kubeconfig := clientcmdapi.NewConfig()
	kubeconfig.Clusters["envtest"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kubeconfig.AuthInfos["envtest"] = &clientcmdapi.AuthInfo{
		ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData,
		Impersonate: "system:serviceaccount:" + ns + ":" + operatorServiceAccount,
	}
	kubeconfig.Contexts["envtest"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "envtest"}
	kubeconfig.CurrentContext = "envtest"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kubeconfig, path); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KUBECONFIG", path)

	// Something for the status reconciler to write.
	if err := c.Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", Labels: map[string]string{"app": "web"}},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}},
	}); err != nil {
		t.Fatal(err)
	}
	// Something for the NotServed reconciler to warn about: a node port the agents do not serve.
	if err := c.Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "nodeport",
			Labels: map[string]string{v1alpha1.ServiceProxyNameLabel: v1alpha1.ServiceProxyName}},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Ports: []corev1.ServicePort{{Port: 80}}},
	}); err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, &v1alpha1.ServicePolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"},
		Spec:       v1alpha1.ServicePolicySpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}},
	}); err != nil {
		t.Fatal(err)
	}

	// The agent settings come from the operator's environment, as a Subscription's spec.config.env sets them.
	fromEnv, err := bindFlags(flag.NewFlagSet("operator", flag.ContinueOnError), func(k string) string {
		return map[string]string{"AGENT_DETECT_LOCAL_MODE": "ClusterCIDR", "AGENT_CLUSTER_CIDR": "10.244.0.0/16,fd00:10:244::/56"}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	opts := &options{
		metricsAddr: "0", probeAddr: "127.0.0.1:0", secureMetrics: true, leaderElect: true, namespace: ns,
		agentImage: "example.test/ipvs-operator:smoke", agent: fromEnv.agent,
		agentMetricsPort: int(agentconfig.DefaultMetricsPort), agentHealthPort: int(agentconfig.DefaultHealthPort),
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
		if ds.Spec.Template.Spec.Containers[0].Image != "example.test/ipvs-operator:smoke" {
			return false, nil
		}
		if args := ds.Spec.Template.Spec.Containers[0].Args; !slices.Contains(args, "--detect-local-mode=ClusterCIDR") ||
			!slices.Contains(args, "--cluster-cidr=10.244.0.0/16,fd00:10:244::/56") {
			t.Fatalf("the agent DaemonSet's args %q do not carry the detect-local mode set in the environment", args)
		}
		var p v1alpha1.ServicePolicy
		if err := c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "web"}, &p); err != nil {
			return false, err
		}
		if len(p.Status.Services) != 1 {
			return false, nil
		}
		var events eventsv1.EventList
		if err := c.List(ctx, &events, client.InNamespace("shop")); err != nil {
			return false, err
		}
		var policyEvent, notServed bool
		for _, e := range events.Items {
			policyEvent = policyEvent || e.Regarding.Kind == "ServicePolicy"
			notServed = notServed || (e.Regarding.Name == "nodeport" && e.Reason == operator.EventReasonNotServed)
		}
		return policyEvent && notServed, nil
	})
	if err != nil {
		t.Fatalf("waiting for the leader Lease, the agent DaemonSet, the policy's status and its event, and the NotServed event: %v", err)
	}
	// Without the list permission on events the operator still warns but repeats itself after a restart; so
	// ask the API server whether the operator may read its NotServed events back.
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User:               "system:serviceaccount:" + ns + ":" + operatorServiceAccount,
		Groups:             []string{"system:serviceaccounts", "system:serviceaccounts:" + ns},
		ResourceAttributes: &authorizationv1.ResourceAttributes{Group: "events.k8s.io", Resource: "events", Verb: "list"},
	}}
	if err := c.Create(ctx, sar); err != nil {
		t.Fatal(err)
	}
	if !sar.Status.Allowed {
		t.Errorf("the operator may not list events.k8s.io events cluster-wide: %+v", sar.Status)
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

// operatorServiceAccount is the operator's ServiceAccount once kustomize has prefixed it (config/default).
const operatorServiceAccount = "ipvs-operator-controller-manager"

// grantOperatorRBAC creates the roles of config/rbac/role.yaml and binds them to the ServiceAccount sa, as
// config/rbac/role_binding.yaml does.
func grantOperatorRBAC(ctx context.Context, t *testing.T, c client.Client, ns, sa string) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "config", "rbac", "role.yaml"))
	if err != nil {
		t.Fatalf("reading the generated RBAC (make manifests writes it): %v", err)
	}
	subject := rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: sa, Namespace: ns}
	var clusterRoles, roles int
	for _, doc := range strings.Split(string(raw), "\n---") {
		if strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(doc), "---")) == "" {
			continue
		}
		obj, _, err := clientgoscheme.Codecs.UniversalDeserializer().Decode([]byte(doc), nil, nil)
		if err != nil {
			t.Fatalf("decoding role.yaml: %v", err)
		}
		switch role := obj.(type) {
		case *rbacv1.ClusterRole:
			clusterRoles++
			mustCreate(ctx, t, c, role)
			mustCreate(ctx, t, c, &rbacv1.ClusterRoleBinding{
				ObjectMeta: metav1.ObjectMeta{Name: role.Name},
				RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
				Subjects:   []rbacv1.Subject{subject},
			})
		case *rbacv1.Role:
			roles++
			role.Namespace = ns // kustomize's namespace transformer does the same
			mustCreate(ctx, t, c, role)
			mustCreate(ctx, t, c, &rbacv1.RoleBinding{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: role.Name},
				RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
				Subjects:   []rbacv1.Subject{subject},
			})
		default:
			t.Fatalf("role.yaml holds a %T", obj)
		}
	}
	if clusterRoles != 1 || roles != 1 {
		t.Fatalf("role.yaml holds %d ClusterRoles and %d Roles, want one of each", clusterRoles, roles)
	}
}

func mustCreate(ctx context.Context, t *testing.T, c client.Client, obj client.Object) {
	t.Helper()
	if err := c.Create(ctx, obj); err != nil {
		t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
	}
}
