//go:build e2e

package e2e

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1alpha1 "github.com/ipvs-operator/ipvs-operator/api/v1alpha1"
	"github.com/ipvs-operator/ipvs-operator/test/dataplane"
)

// scheme holds the built-in types, CRDs (a scenario deletes and restores one) and the ServicePolicy.
var scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := apiextensionsv1.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := lbv1alpha1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}()

// kindDriver runs the data-path scenarios on a kind cluster: nodes are Docker containers, so a node's host
// network namespace is `docker exec` into it; pods are reached with `kubectl exec`; the outside host is a
// container on the same Docker network.
type kindDriver struct{ c *cluster }

var _ dataplane.Driver = kindDriver{}

func (d kindDriver) Client() client.Client { return d.c.client }

func (d kindDriver) Nodes() []string { return append([]string(nil), d.c.nodes...) }

// NodeExec runs argv in the node's host network namespace: in the node container, or for ipvsadm and the echo
// client (which the kind node image lacks) in the node's tools container (nodeExecContainer).
func (d kindDriver) NodeExec(ctx context.Context, node string, argv ...string) (string, error) {
	return d.c.cmd.Run(ctx, nil, nil, append([]string{d.c.cfg.Docker, "exec", nodeExecContainer(node, argv)}, argv...)...)
}

// PodExec runs argv in the pod's first container with `kubectl exec`.
func (d kindDriver) PodExec(ctx context.Context, pod types.NamespacedName, argv ...string) (string, error) {
	return d.c.kubectl(ctx, "", append([]string{"exec", "-n", pod.Namespace, pod.Name, "--"}, argv...)...)
}

// AgentExec runs /agent in the node's agent pod with `kubectl exec`, as the README's uninstall does.
func (d kindDriver) AgentExec(ctx context.Context, node string, args ...string) (string, error) {
	pods := &corev1.PodList{}
	if err := d.c.client.List(ctx, pods, client.InNamespace(dataplane.AgentNamespace),
		client.MatchingLabels{"app.kubernetes.io/name": "ipvs-operator-agent"}); err != nil {
		return "", err
	}
	for _, p := range pods.Items {
		if p.Spec.NodeName == node && p.DeletionTimestamp == nil {
			return d.PodExec(ctx, types.NamespacedName{Namespace: p.Namespace, Name: p.Name}, append([]string{"/agent"}, args...)...)
		}
	}
	return "", fmt.Errorf("no agent pod on node %s", node)
}

// OutsideExec runs argv on the outside host container.
func (d kindDriver) OutsideExec(ctx context.Context, argv ...string) (string, error) {
	return d.c.cmd.Run(ctx, nil, nil, append([]string{d.c.cfg.Docker, "exec", d.c.outside}, argv...)...)
}

// Image is the test image: it holds /labvm, the echo server and client (the product image does not).
func (d kindDriver) Image() string { return d.c.cfg.LabImage }

func (d kindDriver) ClientCommand() []string { return []string{labvmPath, "client"} }
