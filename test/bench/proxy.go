//go:build lab

package bench

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"time"

	"github.com/ipvs-operator/ipvs-operator/api/agentconfig"
	"github.com/ipvs-operator/ipvs-operator/test/lab"
	"github.com/ipvs-operator/ipvs-operator/test/lab/labd"
	"github.com/ipvs-operator/ipvs-operator/test/lab/topology"
)

// Proxy is a Service proxy under test, run by hand on one lab node so that its cold start, CPU and memory
// are its own (no DaemonSet, no kubelet in between). Our agent is one, kube-proxy (kubeproxy.go) another,
// measured the same way from outside.
type Proxy interface {
	// Name is the proxy's column in the table.
	Name() string
	// Start starts the proxy in the node's network namespace (its host network) and returns its guest pid.
	Start(ctx context.Context, l *lab.Lab, node string, auditPeriod time.Duration) (pid int, err error)
	// ReadyURL answers 200 from inside the node's network namespace once the proxy says it is ready; "" if
	// it has no such signal (the table then shows only the time to full kernel state).
	ReadyURL() string
	// MetricsURL is its Prometheus endpoint from inside the node's namespace ("" if none); it is read with
	// the harness's bearer token.
	MetricsURL() string
	// Audits reads the count and total seconds of full audits (periodic re-reads of the kernel) from the
	// metrics text; ok is false if the proxy has none.
	Audits(metrics string) (count int, seconds float64, ok bool)
	// Stop ends the proxy started with pid.
	Stop(ctx context.Context, l *lab.Lab, pid int) error
	// Dataplane is where the proxy programs the Services: what the harness watches on the node.
	Dataplane() Dataplane
	// Cleanup removes what the proxy left in the node's kernel after Stop, so that the next proxy starts
	// from an empty node (every proxy keeps its state over a restart, by design).
	Cleanup(ctx context.Context, l *lab.Lab, node string) error
}

// Dataplane is the kernel state a proxy's Services become.
type Dataplane string

const (
	// DataplaneIPVS is IPVS virtual and real servers (the agent, kube-proxy's ipvs mode).
	DataplaneIPVS Dataplane = "ipvs"
	// DataplaneNFTables is kube-proxy's nftables mode: the map service-ips and one DNAT per service chain.
	DataplaneNFTables Dataplane = "nftables"
	// DataplaneIPTables is kube-proxy's iptables mode through iptables-nft (the guest's iptables): KUBE-SERVICES,
	// the service chains and the endpoint chains' DNAT in table `ip nat`.
	DataplaneIPTables Dataplane = "iptables"
)

// watchCommands are the `benchvm watch` commands that wait for the full state and for a flip.
func (d Dataplane) watchCommands() (full, flip string) {
	switch d {
	case DataplaneNFTables:
		return "nftfull", "nftflip"
	case DataplaneIPTables:
		return "iptfull", "iptflip"
	}
	return "full", "flip"
}

// Agent is this project's agent, started as the DaemonSet would start it (its default flags) with the
// admin kubeconfig of the lab.
type Agent struct {
	// Args are extra arguments.
	Args []string
	// ProfileDir, when set, runs the agent as its test binary `agent.test` (see cmd/agent/profile_test.go)
	// with a CPU profile, the live heap at SIGTERM (heap.prof) and the allocations of the whole run (mem.prof)
	// written there (a guest path) when it stops. The agent serves no pprof.
	ProfileDir string
	// Env are KEY=VALUE pairs added to its environment (GOGC, GOMEMLIMIT).
	Env []string
}

// Name is "agent".
func (Agent) Name() string { return "agent" }

// Start runs the agent (or its profiled test binary) in the background in the node's namespace.
func (a Agent) Start(ctx context.Context, l *lab.Lab, node string, auditPeriod time.Duration) (int, error) {
	argv := make([]string, 0, 4+len(a.Args))
	argv = append(argv, lab.GuestBin+"/agent",
		"--"+agentconfig.FlagNodeName+"="+node,
		"--"+agentconfig.FlagAuditPeriod+"="+auditPeriod.String(),
		// The lab's pod range, given in ClusterCIDR mode, so the agent does not wait for its Node's pod CIDRs.
		"--"+agentconfig.FlagDetectLocalMode+"="+string(agentconfig.DetectLocalClusterCIDR),
		"--"+agentconfig.FlagClusterCIDR+"="+topology.PodCIDR,
		// Every Service, as kube-proxy serves them: the harness's Services carry no service-proxy-name label,
		// so that every proxy is measured on the same objects (kube-proxy ignores labelled ones).
		"--"+agentconfig.FlagScope+"="+agentconfig.ScopeAll)
	argv = append(argv, a.Args...)
	env := append([]string{"KUBECONFIG=" + lab.GuestKubeconfig}, a.Env...)
	if a.ProfileDir != "" {
		env = append(env, "AGENT_ARGS="+strings.Join(argv[1:], " "), "AGENT_HEAP_PROFILE="+a.ProfileDir+"/heap.prof")
		argv = []string{lab.GuestBin + "/agent.test", "-test.run=^TestAgentProfiled$", "-test.timeout=0",
			"-test.cpuprofile=" + a.ProfileDir + "/cpu.prof", "-test.memprofile=" + a.ProfileDir + "/mem.prof"}
	}
	resp, err := l.Run(ctx, labd.ExecRequest{Netns: node, Argv: argv, Background: true,
		LogFile: lab.GuestLogs + "/bench-agent-" + node + ".log", Env: env})
	if err != nil {
		return 0, err
	}
	if resp.Error != "" {
		return 0, fmt.Errorf("bench: starting the agent: %s", resp.Error)
	}
	return resp.Pid, nil
}

// Stop sends SIGTERM and waits for the agent to end, so that a profiled run writes its profiles.
func (a Agent) Stop(ctx context.Context, l *lab.Lab, pid int) error {
	return stopProcess(ctx, l, pid, "the agent")
}

// stopProcess sends SIGTERM to a proxy and waits up to a minute for it to end.
func stopProcess(ctx context.Context, l *lab.Lab, pid int, name string) error {
	if err := l.Signal(ctx, pid, syscall.SIGTERM); err != nil {
		return err
	}
	running, _, err := l.Wait(ctx, pid, time.Minute)
	if err != nil {
		return err
	}
	if running {
		return fmt.Errorf("bench: %s (pid %d) did not end within a minute of SIGTERM", name, pid)
	}
	return nil
}

// ReadyURL is the agent's health port.
func (Agent) ReadyURL() string {
	return fmt.Sprintf("http://127.0.0.1:%d/readyz", agentconfig.DefaultHealthPort)
}

// MetricsURL is the agent's HTTPS metrics port (bearer token checked with the API server).
func (Agent) MetricsURL() string {
	return fmt.Sprintf("https://127.0.0.1:%d/metrics", agentconfig.DefaultMetricsPort)
}

// auditMetric is the agent's audit histogram (controllers/agent/metrics.go).
const auditMetric = "ipvs_operator_agent_audit_duration_seconds"

// Audits reads the agent's audit histogram.
func (Agent) Audits(metrics string) (int, float64, bool) { return histogramText(metrics, auditMetric) }

// Dataplane is IPVS.
func (Agent) Dataplane() Dataplane { return DataplaneIPVS }

// Cleanup runs `agent --cleanup` in the node: its virtual servers, dummy interface and nftables table go.
func (Agent) Cleanup(ctx context.Context, l *lab.Lab, node string) error {
	out, err := l.ExecCombined(ctx, node, lab.GuestBin+"/agent", "--"+agentconfig.FlagCleanup)
	if err != nil {
		return fmt.Errorf("bench: agent --cleanup: %w\n%s", err, out)
	}
	return nil
}
