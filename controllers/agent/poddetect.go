package agent

import (
	"errors"
	"fmt"
	"net/http"
	"sync"

	"github.com/ipvs-operator/ipvs-operator/api/agentconfig"
)

// ErrNoPodCIDRs is why an agent in NodeCIDR mode is not ready: its Node has no spec.podCIDRs, so the guard
// cannot tell this node's pods from the outside and refuses them all (and masquerades their traffic).
var ErrNoPodCIDRs = errors.New("cannot tell this node's pods from the outside")

// PodDetection is whether the agent can tell this node's pods from every other source. It is the readiness
// check "pod-detection": an agent that refuses every pod's connections to ClusterIPs must not look healthy
// in `kubectl get pods`, whatever else works.
type PodDetection struct {
	mu  sync.Mutex
	err error
}

// Set records why pods cannot be told apart (nil: they can). It reports whether err is news, a failure
// that differs from the one recorded, so that the caller emits one Event per change, not one per call.
func (d *PodDetection) Set(err error) (changed bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	changed = err != nil && (d.err == nil || d.err.Error() != err.Error())
	d.err = err
	return changed
}

// ReadyCheck is a healthz.Checker.
func (d *PodDetection) ReadyCheck(*http.Request) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.err
}

// noPodCIDRsError says what is wrong and how to fix it, naming the agent's flags and the operator's
// settings behind them.
func noPodCIDRsError(node string, why string) error {
	return fmt.Errorf("%w: node %s %s, and with --%s=%s the Node's pod CIDRs are the pods' addresses; "+
		"on a CNI that does not use them (Calico IPAM, Cilium cluster-pool, AWS VPC CNI) set --%s=%s with --%s "+
		"(operator: AGENT_DETECT_LOCAL_MODE, AGENT_CLUSTER_CIDR), or %s or %s",
		ErrNoPodCIDRs, node, why, agentconfig.FlagDetectLocalMode, agentconfig.DetectLocalNodeCIDR,
		agentconfig.FlagDetectLocalMode, agentconfig.DetectLocalClusterCIDR, agentconfig.FlagClusterCIDR,
		agentconfig.DetectLocalBridgeInterface, agentconfig.DetectLocalInterfaceNamePrefix)
}
