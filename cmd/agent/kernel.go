package main

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/ipvs-operator/ipvs-operator/api/agentconfig"
	"github.com/ipvs-operator/ipvs-operator/controllers/agent"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
	"github.com/ipvs-operator/ipvs-operator/ipvs/host"
	"github.com/ipvs-operator/ipvs-operator/ipvs/nftrules"
	"github.com/ipvs-operator/ipvs-operator/ipvs/syncer"
	"github.com/ipvs-operator/ipvs-operator/ipvs/takeover"
)

// kernel is the node's kernel as the agent drives it: IPVS, the dummy interface, the nftables table.
type kernel struct {
	ipvs   ipvs.Interface
	vips   ipvs.VIPs
	engine *syncer.Syncer
}

// prepareKernel checks that the modules an IPVS proxy needs are there, sets its sysctls, and proves IPVS
// really works before anything is programmed: a kernel without IPVS answers moby/ipvs with nil errors, so
// only a read-back tells. It loads no module: the agent runs without CAP_SYS_MODULE, and the DaemonSet's
// init container (`agent --load-kernel-modules`) has loaded them.
func prepareKernel(f flags, ipv6 bool) (*kernel, error) {
	log := ctrl.Log.WithName("kernel")
	// IPVS's netlink family is looked up before anything else: on a node whose ip_vs is loadable but not
	// loaded, that lookup makes the kernel load it by itself (the module's genl family alias), so its
	// sysctls exist when they are set below. A kernel without IPVS fails here; the module check then
	// says what exactly is missing, which is the more useful error.
	handle, openErr := ipvs.NewNetlink()
	if err := checkModules(&host.Loader{}); err != nil {
		return nil, err
	}
	if openErr != nil {
		return nil, fmt.Errorf("opening the IPVS netlink socket: %w", openErr)
	}
	release, err := host.RunningKernel()
	if err != nil {
		return nil, fmt.Errorf("reading the kernel version: %w", err)
	}
	sysctl := host.Sysctl{Root: f.SysctlRoot, StateFile: host.StateFile()}
	if ipv6 && !sysctl.HasIPv6() {
		log.Info("The node serves IPv6 but the kernel has no IPv6 in the host network namespace; IPv6 Services will fail")
		ipv6 = false
	}
	settings := host.PlanSysctls(host.SysctlOptions{Kernel: release, IPv6: ipv6, StrictARP: f.StrictARP})
	changed, err := sysctl.Apply(settings)
	if err != nil {
		return nil, fmt.Errorf("setting the sysctls an IPVS proxy needs: %w", err)
	}
	log.Info("Sysctls in place", "kernel", release.String(), "ipv6", ipv6, "strictARP", f.StrictARP, "changed", changed)
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
	rules, err := nftrules.New(podMatchOptions(f)...)
	if err != nil {
		return nil, fmt.Errorf("opening nftables: %w", err)
	}
	engine := syncer.New(handle, vips, rules, clock.RealClock{}, syncer.Options{Metrics: agent.EngineMetrics{}, BatchColdStart: true})
	return &kernel{ipvs: handle, vips: vips, engine: engine}, nil
}

// checkModules fails, naming them, when modules the agent needs are neither loaded nor built in. Missing
// schedulers are only logged: Services using them fail, the rest works. Without a readable module tree a
// built-in module cannot be told from a missing one, and the IPVS probe and the nftables programming that
// follow decide.
func checkModules(l *host.Loader) error {
	log := ctrl.Log.WithName("kernel")
	missing, err := l.CheckRequired()
	if len(missing) > 0 {
		log.Info("Some IPVS schedulers are not available; Services using them will fail", "modules", missing)
	}
	var me *host.ModuleError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, host.ErrNoModuleTree):
		log.Info("Cannot tell whether some kernel modules are built in; the IPVS probe decides", "error", err.Error())
		return nil
	case errors.As(err, &me):
		return fmt.Errorf("kernel modules %s are not loaded, and the agent does not load modules itself (it runs without CAP_SYS_MODULE): "+
			"the DaemonSet's init container `agent --%s` loads them (see its log), or load them on the host: %w",
			strings.Join(me.Modules(), ", "), agentconfig.FlagLoadModules, err)
	default:
		return err
	}
}

// loadModules is `agent --load-kernel-modules`, the DaemonSet's init container: it loads every module the
// agent needs and exits, so that only this short-lived container holds CAP_SYS_MODULE. Missing schedulers
// are a warning; a module tree it cannot read is too (the modules may be built in: the agent's probe
// decides); any other module that fails to load fails the container, naming the module.
func loadModules(l *host.Loader, out io.Writer) error {
	// Each module inserted, with its file and how (the kernel or the agent decompressing it): what an
	// administrator needs to see on a node whose modules are compressed.
	l.OnInsert = func(name, file, how string) { fmt.Fprintf(out, "inserted %s (%s, %s)\n", name, file, how) }
	missing, err := l.LoadRequired()
	if len(missing) > 0 {
		fmt.Fprintf(out, "warning: IPVS schedulers %s are not available; Services using them will fail\n", strings.Join(missing, ", "))
	}
	if errors.Is(err, host.ErrNoModuleTree) {
		fmt.Fprintf(out, "warning: %v\n", err)
		return nil
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "kernel modules loaded: %s\n", strings.Join(slices.DeleteFunc(slices.Clone(host.RequiredModules), func(m string) bool {
		return slices.Contains(missing, m)
	}), " "))
	return nil
}

// takeoverFrom returns the takeover from kube-proxy's IPVS mode (--takeover-kube-proxy-ipvs), or nil.
func (k *kernel) takeoverFrom(f flags) (agent.Takeover, error) {
	if !f.TakeoverKubeProxyIPVS {
		return nil, nil
	}
	theirs, err := ipvs.NewDummyVIPs(takeover.KubeProxyInterface)
	if err != nil {
		return nil, err
	}
	return &takeover.Takeover{Agent: k.vips, KubeProxy: theirs, AgentDevice: f.Interface,
		Firewall: takeover.NFTablesFirewall{}, Legacy: takeover.LegacyFirewall{}, Sets: takeover.NetlinkIPSets{}}, nil
}
