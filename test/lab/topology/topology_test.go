package topology

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestEnvIsWhatTheGuestReads sources Env as the guest's init does and reads every node back.
func TestEnvIsWhatTheGuestReads(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "topology.env"), []byte(Env()), 0o644); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^(#[^\n]*\n)?([A-Z0-9_]+=[A-Za-z0-9./:-]+\n)+$`).MatchString(Env()) {
		t.Fatalf("Env has a value the shell would need quoted:\n%s", Env())
	}
	script := `. ./topology.env
node() { eval "echo \"\$LAB_NODE_${1}_$2\""; }
i=0
while [ $i -lt "$LAB_NODES" ]; do
	echo "$(node $i NAME) $(node $i IP) $(node $i POD_CIDR) $(node $i POD_BRIDGE) $(node $i IP6) $(node $i POD_CIDR6) $(node $i POD_BRIDGE6)"
	i=$((i + 1))
done
echo "$LAB_NODE_GW/$LAB_NODE_BITS $LAB_OUTSIDE_IP $LAB_SERVICE_CIDR $LAB_GUEST_IP:$LAB_LABD_PORT"
echo "$LAB_NODE_GW6/$LAB_NODE_BITS6 $LAB_OUTSIDE_IP6 $LAB_SERVICE_CIDR6"`
	cmd := exec.Command("sh", "-c", script)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	var want strings.Builder
	for _, n := range Nodes {
		want.WriteString(n.Name + " " + n.IP + " " + n.PodCIDR + " " + n.PodBridge() + " " + n.IPv6 + " " + n.PodCIDRv6 + " " + n.PodBridgeV6() + "\n")
	}
	want.WriteString("192.168.100.1/24 " + OutsideIP + " " + ServiceCIDR + " 10.0.2.15:7000\n")
	want.WriteString("fd00:192:168:100::1/64 " + OutsideIPv6 + " " + ServiceCIDRv6 + "\n")
	if string(out) != want.String() {
		t.Fatalf("the guest reads\n%s\nwant\n%s", out, want.String())
	}
	if got, got6 := Nodes[0].PodBridge(), Nodes[1].PodBridgeV6(); got != "10.244.1.1/24" || got6 != "fd00:10:244:2::1/64" {
		t.Fatalf("cbr0 of node-a %s, of node-b in IPv6 %s", got, got6)
	}
}

// TestGuestInitHasNoAddressOfItsOwn keeps the topology in one place: the guest's init takes every address
// from topology.env.
func TestGuestInitHasNoAddressOfItsOwn(t *testing.T) {
	init, err := os.ReadFile(filepath.Join("..", "guest", "init"))
	if err != nil {
		t.Fatal(err)
	}
	addrs := make([]string, 0, 11+6*len(Nodes))
	addrs = append(addrs, GuestIP, NodeGateway, NodeCIDR, OutsideIP, ServiceCIDR, PodCIDR,
		NodeGatewayV6, NodeCIDRv6, OutsideIPv6, ServiceCIDRv6, PodCIDRv6)
	for _, n := range Nodes {
		addrs = append(addrs, n.Name, n.IP, n.PodCIDR, n.PodGateway(), n.IPv6, n.PodCIDRv6)
	}
	for _, line := range strings.Split(string(init), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		for _, a := range addrs {
			if strings.Contains(line, a) {
				t.Errorf("guest/init names %s itself (take it from topology.env): %s", a, line)
			}
		}
	}
}
