package dataplane

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"k8s.io/apimachinery/pkg/util/intstr"

	corev1 "k8s.io/api/core/v1"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
)

// Capability bits of /proc/<pid>/status (capabilities(7)).
const (
	capNetAdmin  = 12
	capSysModule = 16
)

// agentProcessScript prints, for each agent process in the caller's network namespace (the node's; the
// agent runs with host networking), its pid and its capability lines from /proc/<pid>/status. It skips the
// one-shot modes (the init container, a cleanup). POSIX sh, so it runs on busybox (the lab) and in a kind
// node alike.
const agentProcessScript = `self=$(readlink /proc/self/ns/net)
for d in /proc/[0-9]*; do
  [ "$(readlink "$d/ns/net" 2>/dev/null)" = "$self" ] || continue
  cmd=$(tr '\0' ' ' < "$d/cmdline" 2>/dev/null) || continue
  first=${cmd%% *}
  [ "${first##*/}" = agent ] || continue
  case "$cmd" in *--load-kernel-modules*|*--cleanup*) continue;; esac
  echo "pid=${d#/proc/} $(grep -E '^(CapEff|CapBnd|NoNewPrivs):' "$d/status" | tr '\t\n' '  ')"
done`

// agentProcess is one running agent's capability state.
type agentProcess struct {
	PID            int
	CapEff, CapBnd uint64
	NoNewPrivs     bool
	Line           string
}

func (p agentProcess) has(bits uint64, capability int) bool { return bits&(1<<capability) != 0 }

// agentProcesses finds the node's running agents.
func agentProcesses(ctx context.Context, drv Driver, node string) ([]agentProcess, string) {
	GinkgoHelper()
	out, err := drv.NodeExec(ctx, node, "sh", "-c", agentProcessScript)
	Expect(err).NotTo(HaveOccurred(), "listing agent processes on %s: %s", node, out)
	var procs []agentProcess
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], "pid=") {
			continue
		}
		p := agentProcess{Line: line}
		p.PID, _ = strconv.Atoi(strings.TrimPrefix(f[0], "pid="))
		for i := 1; i+1 < len(f); i += 2 {
			switch f[i] {
			case "CapEff:":
				p.CapEff, _ = strconv.ParseUint(f[i+1], 16, 64)
			case "CapBnd:":
				p.CapBnd, _ = strconv.ParseUint(f[i+1], 16, 64)
			case "NoNewPrivs:":
				p.NoNewPrivs = f[i+1] == "1"
			}
		}
		procs = append(procs, p)
	}
	return procs, out
}

// RegisterPrivileges registers the least-privilege scenario: the running agent holds CAP_NET_ADMIN and not
// CAP_SYS_MODULE (nor can it regain it: bounding set, no_new_privs), the DaemonSet's init container loads
// the modules, and Services are served meanwhile. With unloadModule the spec first unloads an unused IPVS
// scheduler module on the first node and checks that the restarted pod's init container loads it back: only
// in the lab, whose kernel is the VM's own (a kind node shares the developer's kernel).
func RegisterPrivileges(driver func() Driver, unloadModule bool) {
	Describe("the agent's privileges", func() {
		It("runs with NET_ADMIN and without SYS_MODULE, its init container loads the modules, and Services are served", func(ctx SpecContext) {
			drv := driver()
			nodes := drv.Nodes()
			Expect(len(nodes)).To(BeNumerically(">=", 2))
			nodeA, nodeB := nodes[0], nodes[1]

			module := ""
			if unloadModule {
				// An IPVS scheduler nothing uses right now (refcnt 0), so removing it disturbs no Service.
				out, err := drv.NodeExec(ctx, nodeA, "sh", "-c",
					`for m in ip_vs_nq ip_vs_sed ip_vs_dh ip_vs_wlc; do [ "$(cat /sys/module/$m/refcnt 2>/dev/null)" = 0 ] && rmmod $m && echo $m && exit 0; done; exit 1`)
				Expect(err).NotTo(HaveOccurred(), "no unused scheduler module to unload on %s: %s", nodeA, out)
				module = strings.TrimSpace(out)
				By("unloaded " + module + " on " + nodeA + "; restarting its agent")
				restartAgent(ctx, drv, nodeA)
				out, err = drv.NodeExec(ctx, nodeA, "cat", "/sys/module/"+module+"/refcnt")
				Expect(err).NotTo(HaveOccurred(), "the init container did not load %s back on %s: %s", module, nodeA, out)
			}

			for _, node := range nodes {
				var procs []agentProcess
				var raw string
				Eventually(ctx, func(g Gomega) {
					procs, raw = agentProcesses(ctx, drv, node)
					g.Expect(procs).To(HaveLen(1), "one running agent process on %s:\n%s", node, raw)
				}).WithTimeout(30 * time.Second).WithPolling(time.Second).Should(Succeed())
				p := procs[0]
				GinkgoWriter.Printf("%s: agent %s\n", node, p.Line)
				Expect(p.has(p.CapEff, capSysModule)).To(BeFalse(), "the agent on %s holds CAP_SYS_MODULE: %s", node, p.Line)
				Expect(p.has(p.CapBnd, capSysModule)).To(BeFalse(), "the agent on %s could regain CAP_SYS_MODULE (bounding set): %s", node, p.Line)
				Expect(p.has(p.CapEff, capNetAdmin)).To(BeTrue(), "the agent on %s lacks CAP_NET_ADMIN: %s", node, p.Line)
				Expect(p.CapEff).To(Equal(uint64(1)<<capNetAdmin), "the agent on %s holds more than CAP_NET_ADMIN: %s", node, p.Line)
				Expect(p.NoNewPrivs).To(BeTrue(), "allowPrivilegeEscalation: false not in force on %s: %s", node, p.Line)
			}

			// The data path works with these privileges: a pod on node B reaches pods on node A.
			ns := newNamespace(ctx, drv)
			cli := clientPod(ctx, drv, ns, "client", nodeB)
			echoDeployment(ctx, drv, ns, "priv", 2, nodeA, httpPort)
			svc := newService(ctx, drv, ns, "priv", map[string]string{"app": "priv"}, nil,
				svcPort("http", 80, intstr.FromInt32(8080), corev1.ProtocolTCP))
			pods := waitPodsReady(ctx, drv, ns, map[string]string{"app": "priv"}, 2)
			want := endpoints(podIPs(pods), 8080)
			for _, node := range nodes {
				Eventually(ctx, func(g Gomega) {
					table, raw := ipvsSave(ctx, drv, node)
					g.Expect(activeRealServers(virtualServer(table, svc.Spec.ClusterIP, 80, ipvs.TCP))).To(Equal(want), "on %s:\n%s", node, raw)
				}).WithTimeout(20 * time.Second).WithPolling(200 * time.Millisecond).Should(Succeed())
			}
			got := fromPod(ctx, drv, cli, request{addr: hostPort(svc.Spec.ClusterIP, 80), count: 4})
			Expect(got.Failed).To(BeZero(), fmt.Sprintf("through %s with the agents holding only NET_ADMIN: %s", svc.Spec.ClusterIP, got.Raw))
			Expect(got.Answers).To(HaveLen(2), got.Raw)
		})
	})
}
