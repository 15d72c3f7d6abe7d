package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/ipvs-operator/ipvs-operator/controllers/agent"
	"github.com/ipvs-operator/ipvs-operator/controllers/agent/nodelock"
	"github.com/ipvs-operator/ipvs-operator/ipvs"
	"github.com/ipvs-operator/ipvs-operator/ipvs/host"
	"github.com/ipvs-operator/ipvs-operator/ipvs/nftrules"
	"github.com/ipvs-operator/ipvs-operator/ipvs/syncer"
)

// lockName is the node lock's abstract socket name (a variable for tests).
var lockName = nodelock.DefaultName

// cleanupCommand is what `agent --cleanup` sends to the agent holding the node's lock.
const cleanupCommand = "cleanup"

// cleanupTimeout bounds `agent --cleanup`: removing tens of thousands of virtual servers takes seconds, and
// a wedged agent must not hang the uninstall forever.
const cleanupTimeout = 5 * time.Minute

// runCleanup is `agent --cleanup`. If an agent runs on this node it holds the node's lock: it is asked to
// halt all programming and clean up itself, because a cleanup done beside it would be undone by its next
// audit. Otherwise this process takes the lock (so no agent starts meanwhile) and cleans up. What was
// removed goes to out.
func runCleanup(ctx context.Context, f flags, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, cleanupTimeout)
	defer cancel()
	for attempt := 1; ; attempt++ {
		lock, err := nodelock.Acquire(lockName)
		if err == nil {
			defer lock.Close()
			fmt.Fprintln(out, "No agent runs on this node; cleaning up here.")
			removed, err := cleanupHere(ctx, f)
			fmt.Fprint(out, formatRemoved(removed, f.Interface))
			if err != nil {
				return err
			}
			restored, err := restoreSysctls(f)
			fmt.Fprint(out, restored)
			return err
		}
		var held *nodelock.HeldError
		if !errors.As(err, &held) {
			return err
		}
		fmt.Fprintf(out, "Asking the running agent (%s) to stop programming this node and clean up.\n", holder(held))
		report, err := nodelock.Ask(ctx, lockName, cleanupCommand)
		if errors.Is(err, unix.ECONNREFUSED) && attempt < 3 {
			continue // the agent ended between the two calls: the lock is free now
		}
		fmt.Fprint(out, report)
		if err != nil {
			return fmt.Errorf("the running agent's cleanup: %w", err)
		}
		fmt.Fprintln(out, "The agent stays halted (not ready) until it is deleted: delete the install now.")
		return nil
	}
}

func holder(h *nodelock.HeldError) string {
	if h.PID == 0 {
		return "pid not visible here"
	}
	return fmt.Sprintf("pid %d", h.PID)
}

// cleanupHere removes what the agent owns with no agent running. It opens the kernel without preparing it:
// no sysctl, no dummy interface, no probe; only the modules are loaded, so that the IPVS table can be read.
func cleanupHere(ctx context.Context, f flags) (syncer.Removed, error) {
	_, _ = host.LoadRequiredModules()
	handle, err := ipvs.NewNetlink()
	if err != nil {
		return syncer.Removed{}, fmt.Errorf("opening the IPVS netlink socket: %w", err)
	}
	vips, err := ipvs.NewDummyVIPs(f.Interface)
	if err != nil {
		return syncer.Removed{}, err
	}
	rules, err := nftrules.New()
	if err != nil {
		return syncer.Removed{}, fmt.Errorf("opening nftables: %w", err)
	}
	engine := syncer.New(handle, vips, rules, clock.RealClock{}, syncer.Options{})
	return engine.CleanupReport(ctrl.LoggerInto(ctx, ctrl.Log.WithName("cleanup")))
}

// controlHandler answers commands on the node lock's socket in a running agent.
func controlHandler(engine *agent.HaltableEngine, f flags) nodelock.Handler {
	return func(ctx context.Context, command string) (string, error) {
		log := ctrl.Log.WithName("control")
		if command != cleanupCommand {
			return "", fmt.Errorf("unknown command %q", command)
		}
		log.Info("Cleanup requested: halting all programming and removing what the agent owns")
		removed, err := engine.Halt(ctrl.LoggerInto(ctx, log))
		report := formatRemoved(removed, f.Interface)
		if err == nil {
			// Only once nothing of the agent's is left: IPVS state without its sysctls would misbehave.
			var restored string
			restored, err = restoreSysctls(f)
			report += restored
		}
		if err != nil {
			log.Error(err, "Cleanup failed; the agent stays halted, run the cleanup again")
		} else {
			log.Info("Cleanup done; halted until deleted", "virtualServers", len(removed.VirtualServers), "vips", len(removed.VIPs))
		}
		return report, err
	}
}

// restoreSysctls puts back the node's values of the sysctls the agent changed where that is safe (see
// host.Setting.Restore), and says what it did, one line each.
func restoreSysctls(f flags) (string, error) {
	report, err := host.Sysctl{Root: f.SysctlRoot, StateFile: host.StateFile()}.Restore()
	var b strings.Builder
	for _, l := range report {
		b.WriteString(l + "\n")
	}
	if err != nil {
		return b.String(), fmt.Errorf("restoring sysctls: %w", err)
	}
	return b.String(), nil
}

// formatRemoved tells the user what left the kernel, one line each.
func formatRemoved(r syncer.Removed, ifName string) string {
	var b strings.Builder
	for _, k := range r.VirtualServers {
		fmt.Fprintf(&b, "removed virtual server %s\n", k)
	}
	if len(r.VirtualServers) == 0 {
		b.WriteString("no virtual server of the agent's was left\n")
	}
	if r.Interface {
		if len(r.VIPs) > 0 {
			vips := make([]string, len(r.VIPs))
			for i, v := range r.VIPs {
				vips[i] = v.String()
			}
			fmt.Fprintf(&b, "removed interface %s with its %d addresses: %s\n", ifName, len(vips), strings.Join(vips, " "))
		} else {
			fmt.Fprintf(&b, "interface %s is gone\n", ifName)
		}
	}
	if r.Table {
		fmt.Fprintf(&b, "nftables table inet %s is gone\n", nftrules.TableName)
	}
	return b.String()
}
