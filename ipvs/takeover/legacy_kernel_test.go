//go:build kernel

package takeover_test

import (
	"context"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/ipvs-operator/ipvs-operator/ipvs/fake"
	"github.com/ipvs-operator/ipvs-operator/ipvs/takeover"
)

// kubeProxyRules6 is the IPv6 half of kubeProxyRules, trimmed to the chains and jumps (no ipset).
const kubeProxyRules6 = `*nat
:KUBE-SERVICES - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A POSTROUTING -s fd00:10:244::/48 -j MASQUERADE
-A KUBE-SERVICES -d fd00:10:96::/112 -j KUBE-MARK-MASQ
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
COMMIT
`

// otherRules are rules of others in the same tables, before and after kube-proxy's: they must stay, and
// their jumps must still land on their chains once the entries before them moved.
const otherRules = `*filter
:CNI-FORWARD - [0:0]
-I FORWARD 1 -j CNI-FORWARD
-A FORWARD -d 10.244.0.0/16 -j ACCEPT
-A CNI-FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -j DROP
COMMIT
*nat
:CNI-POSTROUTING - [0:0]
-A POSTROUTING -j CNI-POSTROUTING
-A CNI-POSTROUTING -s 10.244.0.0/16 ! -d 10.244.0.0/16 -j MASQUERADE
COMMIT
`

// saved is iptables-save's output without its comments and counters: what a golden compares.
func saved(t *testing.T, prog string) string {
	t.Helper()
	out := sh(t, prog)
	var b strings.Builder
	counters := regexp.MustCompile(` \[\d+:\d+\]$`)
	for _, l := range strings.Split(out, "\n") {
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		b.WriteString(counters.ReplaceAllString(l, "") + "\n")
	}
	return b.String()
}

func restore(t *testing.T, prog, rules string) {
	t.Helper()
	cmd := exec.Command(prog, "--noflush")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", prog, err, out)
	}
}

// TestKernelLegacyLeftovers removes kube-proxy's chains made by iptables-legacy, in both families, from tables
// that also hold kubelet's and a CNI plugin's rules, with the sockets iptables-legacy uses: what is left must
// be exactly the others' rules, their jumps intact. Runs wherever iptables-legacy and ipset work (the host,
// the lab VM).
func TestKernelLegacyLeftovers(t *testing.T) {
	inNewNetns(t)
	for _, p := range []string{"iptables-legacy-restore", "ip6tables-legacy-restore", "ipset"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("needs %s", p)
		}
	}
	// A namespace without legacy tables: nothing to read, and reading created none.
	if chains, jumps, err := (takeover.LegacyFirewall{}).Read(takeover.IPv4); err != nil || len(chains)+len(jumps) != 0 {
		t.Fatalf("no legacy table: %v %v %v", chains, jumps, err)
	}
	if names := strings.TrimSpace(sh(t, "cat /proc/thread-self/net/ip_tables_names")); names != "" {
		t.Fatalf("reading created legacy tables: %q", names)
	}
	sh(t, `ipset create KUBE-CLUSTER-IP hash:ip,port
ipset create KUBE-LOOP-BACK hash:ip,port,ip
ipset create KUBE-IPVS-IPS hash:ip
ipset create KUBE-NODE-PORT-TCP bitmap:port range 0-65535`)
	restore(t, "iptables-legacy-restore", kubeProxyRules)
	restore(t, "iptables-legacy-restore", otherRules)
	restore(t, "ip6tables-legacy-restore", kubeProxyRules6)
	before := saved(t, "iptables-legacy-save") + saved(t, "ip6tables-legacy-save")

	lock := filepath.Join(t.TempDir(), "xtables.lock")
	sh(t, "touch "+lock)
	legacy := takeover.LegacyFirewall{LockPath: lock}
	chains, jumps, err := legacy.Read(takeover.IPv4)
	if err != nil {
		t.Fatal(err)
	}
	if len(chains) == 0 || len(jumps) != 9 {
		t.Fatalf("read %d chains and jumps %v, want kube-proxy's 9 jumps", len(chains), jumps)
	}
	kubeIPVS0 := fake.NewVIPs() // no kube-ipvs0: only the firewall and the sets here
	tk := &takeover.Takeover{Agent: fake.NewVIPs(), KubeProxy: kubeIPVS0, AgentDevice: "ipvs0",
		Legacy: legacy, Sets: takeover.NetlinkIPSets{}}
	steps, err := tk.RemoveLeftovers(context.Background())
	if err != nil {
		t.Fatalf("%v\nbefore:\n%s", err, before)
	}
	golden(t, "legacy-leftovers.golden", takeover.Render(steps))
	golden(t, "legacy-after.golden", saved(t, "iptables-legacy-save")+saved(t, "ip6tables-legacy-save"))
	if got := strings.TrimSpace(sh(t, "ipset list -n")); got != "" {
		t.Errorf("ipsets left: %q", got)
	}
	if steps, err := tk.RemoveLeftovers(context.Background()); err != nil || len(steps) != 0 {
		t.Errorf("second run: %v, %v", steps, err)
	}
}
