package main

import (
	"fmt"

	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/ipvs-operator/ipvs-operator/controllers/agent"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
	"github.com/ipvs-operator/ipvs-operator/ipvs/host"
	"github.com/ipvs-operator/ipvs-operator/ipvs/nftrules"
	ipvssync "github.com/ipvs-operator/ipvs-operator/ipvs/sync"
)

// kernel is the node's kernel as the agent drives it: IPVS, the dummy interface, the nftables table.
type kernel struct {
	ipvs   ipvs.Interface
	engine *ipvssync.Syncer
}

// prepareKernel loads the modules an IPVS proxy needs, sets its sysctls, and proves IPVS really works before
// anything is programmed: a kernel without IPVS answers moby/ipvs with nil errors, so only a read-back tells.
func prepareKernel(f flags) (*kernel, error) {
	log := ctrl.Log.WithName("kernel")
	missing, err := host.LoadRequiredModules()
	if len(missing) > 0 {
		log.Info("Some IPVS schedulers are not available; Services using them will fail", "modules", missing)
	}
	if err != nil {
		// Not fatal by itself: modules may be built in, or loaded by the host. The probe below decides.
		log.Info("Some kernel modules could not be loaded", "error", err.Error())
	}
	changed, err := host.Sysctl{Root: f.SysctlRoot}.Apply()
	if err != nil {
		return nil, fmt.Errorf("setting the sysctls an IPVS proxy needs: %w", err)
	}
	if len(changed) > 0 {
		log.Info("Set sysctls", "changed", changed)
	}
	handle, err := ipvs.NewNetlink()
	if err != nil {
		return nil, fmt.Errorf("opening the IPVS netlink socket: %w", err)
	}
	if err := host.Probe(handle); err != nil {
		return nil, err
	}
	vips, err := ipvs.NewDummyVIPs(f.Interface)
	if err != nil {
		return nil, err
	}
	if err := vips.EnsureInterface(); err != nil {
		return nil, fmt.Errorf("creating dummy interface %s: %w", f.Interface, err)
	}
	rules, err := nftrules.New()
	if err != nil {
		return nil, fmt.Errorf("opening nftables: %w", err)
	}
	engine := ipvssync.New(handle, vips, rules, clock.RealClock{}, ipvssync.Options{Metrics: agent.EngineMetrics{}})
	return &kernel{ipvs: handle, engine: engine}, nil
}
