// Package dataplane holds the Ginkgo scenarios that prove Services are served through real IPVS, written
// once against a small Driver so that the lab (a qemu VM on the developer's machine) and kind run the same
// specs.
package dataplane

import (
	"context"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Driver is what a scenario needs of a cluster: its API, a way to run commands on nodes and in pods, and the
// image that serves and requests test traffic.
//
// Backend and client pods run Image() with Args built by EchoArgs; the echo server answers every TCP line,
// HTTP request and UDP datagram with the pod's name, and serves GET /readyz (503 after
// GET /admin/fail-readiness, 200 again after GET /admin/pass-readiness).
type Driver interface {
	// Client is a cluster-admin client.
	Client() client.Client
	// Nodes are the names of the nodes the agent runs on, sorted.
	Nodes() []string
	// NodeExec runs argv in a node's host network namespace and returns its combined output.
	NodeExec(ctx context.Context, node string, argv ...string) (string, error)
	// PodExec runs argv in a pod (its network namespace in the lab, `kubectl exec` in kind).
	PodExec(ctx context.Context, pod types.NamespacedName, argv ...string) (string, error)
	// AgentExec runs the agent's binary on a node with args, as the README's uninstall does with
	// `kubectl exec <the node's agent pod> -- /agent args...`, and returns its combined output.
	AgentExec(ctx context.Context, node string, args ...string) (string, error)
	// OutsideExec runs argv on a host that shares the nodes' network but is not part of the cluster.
	OutsideExec(ctx context.Context, argv ...string) (string, error)
	// Image is the image of echo server and client pods.
	Image() string
	// ClientCommand is the argv prefix that runs the echo client in a pod or on a node or the outside host,
	// e.g. ["/labvm", "client"]; see the client's flags in test/lab/echo.
	ClientCommand() []string
}
