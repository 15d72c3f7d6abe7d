package lab

import (
	"context"
	_ "embed"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ipvs-operator/ipvs-operator/test/install"
	"github.com/ipvs-operator/ipvs-operator/test/lab/host"
	"github.com/ipvs-operator/ipvs-operator/test/lab/topology"
)

// The lab's cluster DNS.
const (
	// CoreDNSVersion is the CoreDNS release hack/build-coredns.sh builds.
	CoreDNSVersion = "1.15.0"
	// CoreDNSImage is what the Deployment names; the lab kubelet maps it to the built binary.
	CoreDNSImage = "registry.k8s.io/coredns/coredns:v" + CoreDNSVersion
	// ClusterDNSNamespace and ClusterDNSDeployment name the CoreDNS Deployment, ClusterDNSService its Service.
	ClusterDNSNamespace  = "kube-system"
	ClusterDNSDeployment = "coredns"
	ClusterDNSService    = "kube-dns"
)

// coreDNSImageMap maps the CoreDNS image to the guest's binaries (see Options.ImageMap).
const coreDNSImageMap = "coredns/coredns=" + GuestBin

//go:embed manifests/coredns.yaml
var coreDNSManifest string

// ClusterDNSManifests are the objects of the lab's cluster DNS: CoreDNS's ServiceAccount, RBAC, Corefile,
// Deployment and the kube-dns Service at ClusterDNSIP.
func ClusterDNSManifests() ([]*unstructured.Unstructured, error) {
	m := strings.NewReplacer("{{VERSION}}", CoreDNSVersion, "{{DNS_IP}}", topology.ClusterDNSIP).Replace(coreDNSManifest)
	return install.Decode([]byte(m))
}

// coreDNSBinary is the cached CoreDNS build.
func coreDNSBinary(opts Options) string {
	return filepath.Join(opts.RepoRoot, "bin", "coredns", CoreDNSVersion, "coredns")
}

// ensureCoreDNS builds CoreDNS with hack/build-coredns.sh when it is not cached (about 5 min on a busy
// 2-core machine, once). The script keys its cache on the version and the plugin list and touches the
// binary when it is current, so it is asked again only when the script is newer than the binary.
func ensureCoreDNS(ctx context.Context, opts Options) error {
	script := filepath.Join(opts.RepoRoot, "hack", "build-coredns.sh")
	if coreDNSCurrent(coreDNSBinary(opts), script) {
		return nil
	}
	if opts.SkipKubeBuild {
		return fmt.Errorf("lab: missing %s (run hack/build-coredns.sh)", coreDNSBinary(opts))
	}
	lock := filepath.Join(opts.RepoRoot, "bin", ".build-coredns.lock")
	if err := os.MkdirAll(filepath.Dir(lock), 0o755); err != nil {
		return err
	}
	unlock, err := lockFile(ctx, lock, opts.Out)
	if err != nil {
		return err
	}
	defer unlock()
	if coreDNSCurrent(coreDNSBinary(opts), script) {
		return nil
	}
	host.Progress(opts.Out, "checking CoreDNS v%s with hack/build-coredns.sh (a first build takes ~5 min)...", CoreDNSVersion)
	t0 := time.Now()
	env := []string{"COREDNS_VERSION=" + CoreDNSVersion, "COREDNS_BIN_DIR=" + filepath.Dir(coreDNSBinary(opts))}
	if err := host.RunStreaming(ctx, opts.Out, "  ", env, opts.RepoRoot, "bash", script); err != nil {
		return err
	}
	host.Progress(opts.Out, "CoreDNS ready in %s", time.Since(t0).Round(time.Second))
	return nil
}

// coreDNSCurrent says the binary exists and is newer than the script that builds it.
func coreDNSCurrent(binary, script string) bool {
	b, err := os.Stat(binary)
	if err != nil {
		return false
	}
	s, err := os.Stat(script)
	return err == nil && !s.ModTime().After(b.ModTime())
}

// DeployClusterDNS installs the cluster DNS (ClusterDNSManifests) and waits until its Deployment is
// available. The kube-dns Service answers only where a proxy serves ClusterIPs: in the lab, the agents in
// scope all (InstallOptions).
func (l *Lab) DeployClusterDNS(ctx context.Context, timeout time.Duration) error {
	t0 := time.Now()
	objs, err := ClusterDNSManifests()
	if err != nil {
		return err
	}
	if err := install.Apply(ctx, l.client, objs); err != nil {
		return fmt.Errorf("lab: installing CoreDNS: %w", err)
	}
	if err := WaitDeploymentAvailable(ctx, l.client, client.ObjectKey{Namespace: ClusterDNSNamespace, Name: ClusterDNSDeployment}, timeout); err != nil {
		return fmt.Errorf("lab: CoreDNS: %w", err)
	}
	l.Timings.ClusterDNS = time.Since(t0)
	host.Progress(l.opts.Out, "CoreDNS ready in %s (kube-dns %s)", l.Timings.ClusterDNS.Round(10*time.Millisecond), topology.ClusterDNSIP)
	return nil
}

// WaitDeploymentAvailable waits until every replica of a Deployment's current generation is available.
func WaitDeploymentAvailable(ctx context.Context, c client.Client, key client.ObjectKey, timeout time.Duration) error {
	var last string
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		var d appsv1.Deployment
		if err := c.Get(ctx, key, &d); err != nil {
			last = err.Error()
			return false, nil
		}
		want := int32(1)
		if d.Spec.Replicas != nil {
			want = *d.Spec.Replicas
		}
		last = fmt.Sprintf("%d/%d available, %d updated (generation %d, observed %d)", d.Status.AvailableReplicas, want,
			d.Status.UpdatedReplicas, d.Generation, d.Status.ObservedGeneration)
		return d.Status.ObservedGeneration >= d.Generation && d.Status.UpdatedReplicas == want &&
			d.Status.AvailableReplicas == want, nil
	})
	if err != nil {
		return fmt.Errorf("deployment %s not available: %s: %w", key, last, err)
	}
	return nil
}

// InstallOptions are how the lab installs the operator (test/install) from config/ in the checkout root:
// the lab image (which the lab kubelet maps to the built binaries), and the agents in scope all, because
// the lab runs no kube-proxy: they serve every ClusterIP Service, kubernetes and kube-dns included, and
// reach the API server at its real address rather than through the ClusterIP they program.
func InstallOptions(root string) install.Options {
	return install.Options{
		RepoRoot:  root,
		Kustomize: filepath.Join(root, "bin", "kustomize"),
		Image:     OperatorImage,
		Env: map[string]string{
			"AGENT_SCOPE":             "all",
			"AGENT_APISERVER_ADDRESS": fmt.Sprintf("%s:%d", topology.GuestAPIServerHost, topology.GuestAPIServerPort),
		},
	}
}

// OperatorImage is the operator's and the agent's image in the lab; the lab kubelet maps any image of this
// project to the locally built binary named by the container's command.
const OperatorImage = "ghcr.io/ipvs-operator/ipvs-operator:lab"

// InstallOperator installs the operator from config/ (InstallOptions) and waits until it and the agents it
// renders are ready.
func (l *Lab) InstallOperator(ctx context.Context, timeout time.Duration) error {
	t0 := time.Now()
	o := InstallOptions(l.opts.RepoRoot)
	if err := install.Kustomize(ctx, l.client, o); err != nil {
		return fmt.Errorf("lab: installing the operator: %w", err)
	}
	if err := install.WaitReady(ctx, l.client, l.Nodes(), timeout); err != nil {
		return fmt.Errorf("lab: operator and agents: %w", err)
	}
	host.Progress(l.opts.Out, "operator installed from config/ and agents ready in %s (scope all)", time.Since(t0).Round(10*time.Millisecond))
	return nil
}
