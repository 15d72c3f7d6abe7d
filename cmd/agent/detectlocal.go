package main

import (
	"context"
	"net/netip"

	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/ipvs-operator/ipvs-operator/api/agentconfig"
	"github.com/ipvs-operator/ipvs-operator/controllers/agent"
	"github.com/ipvs-operator/ipvs-operator/ipvs/nftrules"
)

// podMatchOptions are the nftables table's options for f's --detect-local-mode: the interface modes match
// the interface a packet arrives on; the CIDR modes use the table's pod CIDR sets (the default).
func podMatchOptions(f flags) []nftrules.Option {
	switch f.DetectLocalMode {
	case agentconfig.DetectLocalBridgeInterface:
		return []nftrules.Option{nftrules.WithPodInterface(f.PodBridgeInterface)}
	case agentconfig.DetectLocalInterfaceNamePrefix:
		return []nftrules.Option{nftrules.WithPodInterfacePrefix(f.PodInterfaceNamePrefix)}
	}
	return nil
}

// setupPodDetection wires f's --detect-local-mode into the manager: the "pod-detection" readiness check,
// and where the pod CIDRs come from (nil for the interface modes, which use none): --cluster-cidr, or this
// Node's spec.podCIDRs, followed as they change.
func setupPodDetection(mgr ctrl.Manager, f flags, engine agent.Engine) (func(context.Context) ([]netip.Prefix, error), error) {
	detection := &agent.PodDetection{}
	if err := mgr.AddReadyzCheck("pod-detection", detection.ReadyCheck); err != nil {
		return nil, err
	}
	switch f.DetectLocalMode {
	case agentconfig.DetectLocalClusterCIDR:
		cidrs := f.ClusterCIDRs
		return func(context.Context) ([]netip.Prefix, error) { return cidrs, nil }, nil
	case agentconfig.DetectLocalNodeCIDR:
		r := &agent.PodCIDRReconciler{Client: mgr.GetClient(), Engine: engine, NodeName: f.NodeName,
			Detection: detection, Recorder: mgr.GetEventRecorder("ipvs-operator-agent")}
		return r.PodCIDRs, r.SetupWithManager(mgr)
	}
	return nil, nil
}
