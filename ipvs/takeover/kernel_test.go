//go:build kernel

package takeover_test

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
	"k8s.io/apimachinery/pkg/util/sets"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
	"github.com/ipvs-operator/ipvs-operator/ipvs/takeover"
)

// kubeProxyRules is what kube-proxy v1.37.1's IPVS mode writes, trimmed to one rule of each kind, plus
// kubelet's KUBE-FIREWALL, which must stay.
const kubeProxyRules = `*nat
:KUBE-SERVICES - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-NODE-PORT - [0:0]
:KUBE-LOAD-BALANCER - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A KUBE-SERVICES -m comment --comment "Kubernetes service cluster ip + port for masquerade purpose" -m set --match-set KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ
-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT
-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT
-A KUBE-POSTROUTING -m comment --comment "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose" -m set --match-set KUBE-LOOP-BACK dst,dst,src -j MASQUERADE
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
COMMIT
*filter
:KUBE-FORWARD - [0:0]
:KUBE-IPVS-FILTER - [0:0]
:KUBE-IPVS-OUT-FILTER - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
:KUBE-SOURCE-RANGES-FIREWALL - [0:0]
:KUBE-NODE-PORT - [0:0]
:KUBE-FIREWALL - [0:0]
-A INPUT -m comment --comment "kubernetes health check rules" -j KUBE-NODE-PORT
-A INPUT -m comment --comment "kubernetes ipvs access filter" -j KUBE-IPVS-FILTER
-A INPUT -m comment --comment "kube-proxy firewall rules" -j KUBE-PROXY-FIREWALL
-A INPUT -j KUBE-FIREWALL
-A FORWARD -m comment --comment "kube-proxy firewall rules" -j KUBE-PROXY-FIREWALL
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A OUTPUT -m comment --comment "kubernetes ipvs access filter" -j KUBE-IPVS-OUT-FILTER
-A KUBE-FORWARD -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-IPVS-FILTER -m set --match-set KUBE-CLUSTER-IP dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set KUBE-IPVS-IPS dst -j REJECT --reject-with icmp-port-unreachable
-A KUBE-PROXY-FIREWALL -j KUBE-SOURCE-RANGES-FIREWALL
-A KUBE-FIREWALL -m mark --mark 0x8000/0x8000 -j DROP
COMMIT
`

// inNewNetns moves the test's goroutine, for good, into a fresh network namespace with lo up: the thread
// stays locked and ends with the test, so nothing here touches the machine's own namespace.
func inNewNetns(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		t.Skipf("cannot create a network namespace: %v", err)
	}
	sh(t, ipCmd()+" link set lo up")
}

// ipCmd is iproute2's ip: the lab guest's busybox sh would run its own ip applet for a bare "ip", whose
// options and output differ.
func ipCmd() string {
	if _, err := os.Stat("/usr/sbin/ip"); err == nil {
		return "/usr/sbin/ip"
	}
	return "ip"
}

func sh(t *testing.T, script string) string {
	t.Helper()
	out, err := exec.Command("sh", "-ec", script).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", script, err, out)
	}
	return string(out)
}

// TestKernelTakeover runs both phases against the kernel: kube-proxy's chains made by iptables-nft (through
// iptables-restore, as kube-proxy writes them), its ipsets referenced by those rules, and a ClusterIP on
// kube-ipvs0 that must stay local through the whole takeover.
func TestKernelTakeover(t *testing.T) {
	inNewNetns(t)
	if _, err := exec.LookPath("iptables-restore"); err != nil {
		t.Skip("needs iptables and ipset")
	}
	if out, err := exec.Command(ipCmd(), "link", "add", takeover.KubeProxyInterface, "type", "dummy").CombinedOutput(); err != nil {
		t.Skipf("no dummy devices: %v %s", err, out)
	}
	sh(t, ipCmd()+` addr add 10.96.0.10/32 dev kube-ipvs0
`+ipCmd()+` addr add 10.96.0.99/32 dev kube-ipvs0
ipset create KUBE-CLUSTER-IP hash:ip,port
ipset add KUBE-CLUSTER-IP 10.96.0.10,tcp:80
ipset create KUBE-LOOP-BACK hash:ip,port,ip
ipset create KUBE-IPVS-IPS hash:ip
ipset create KUBE-NODE-PORT-TCP bitmap:port range 0-65535
ipset create SOMEONE-ELSES hash:ip`)
	restore := exec.Command("iptables-restore", "--noflush")
	restore.Stdin = strings.NewReader(kubeProxyRules)
	if out, err := restore.CombinedOutput(); err != nil {
		t.Fatalf("iptables-restore: %v\n%s", err, out)
	}
	agent, err := ipvs.NewDummyVIPs("ipvs0")
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := ipvs.NewDummyVIPs(takeover.KubeProxyInterface)
	if err != nil {
		t.Fatal(err)
	}
	tk := &takeover.Takeover{Agent: agent, KubeProxy: theirs, AgentDevice: "ipvs0",
		Firewall: takeover.NFTablesFirewall{}, Sets: takeover.NetlinkIPSets{}}
	ctx := context.Background()

	steps, err := tk.Adopt(ctx, sets.New(netip.MustParseAddr("10.96.0.10")))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := takeover.Render(steps), "ip addr add 10.96.0.10/32 dev ipvs0\n"; got != want {
		t.Errorf("adopt: %q, want %q", got, want)
	}
	steps, err = tk.RemoveLeftovers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "kernel-leftovers.golden", takeover.Render(steps))

	if out, err := exec.Command(ipCmd(), "link", "show", takeover.KubeProxyInterface).CombinedOutput(); err == nil {
		t.Errorf("kube-ipvs0 is still there:\n%s", out)
	}
	// The adopted ClusterIP is still local (its route now through ipvs0); the one nobody serves is gone.
	local := sh(t, ipCmd()+" route show table local")
	if !strings.Contains(local, "local 10.96.0.10 dev ipvs0") {
		t.Errorf("10.96.0.10 is not local through ipvs0 any more:\n%s", local)
	}
	if strings.Contains(local, "10.96.0.99") {
		t.Errorf("10.96.0.99 is still local:\n%s", local)
	}
	saved := sh(t, "iptables-save")
	for _, c := range takeover.KubeProxyChains {
		if strings.Contains(saved, c.Name+" ") || strings.Contains(saved, c.Name+"\n") {
			t.Errorf("chain %s is still there:\n%s", c, saved)
			break
		}
	}
	if !strings.Contains(saved, "-A INPUT -j KUBE-FIREWALL") || !strings.Contains(saved, ":KUBE-FIREWALL") {
		t.Errorf("kubelet's KUBE-FIREWALL went too:\n%s", saved)
	}
	if got := strings.TrimSpace(sh(t, "ipset list -n")); got != "SOMEONE-ELSES" {
		t.Errorf("ipsets left: %q, want only SOMEONE-ELSES", got)
	}
	// Idempotent: nothing left to do.
	if steps, err := tk.RemoveLeftovers(ctx); err != nil || len(steps) != 0 {
		t.Errorf("second run: %v, %v", steps, err)
	}
}
