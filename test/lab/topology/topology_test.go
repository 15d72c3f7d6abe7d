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
	echo "$(node $i NAME) $(node $i IP) $(node $i POD_CIDR) $(node $i POD_BRIDGE)"
	i=$((i + 1))
done
echo "$LAB_NODE_GW/$LAB_NODE_BITS $LAB_OUTSIDE_IP $LAB_SERVICE_CIDR $LAB_GUEST_IP:$LAB_LABD_PORT"`
	cmd := exec.Command("sh", "-c", script)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	var want strings.Builder
	for _, n := range Nodes {
		want.WriteString(n.Name + " " + n.IP + " " + n.PodCIDR + " " + n.PodBridge() + "\n")
	}
	want.WriteString("192.168.100.1/24 " + OutsideIP + " " + ServiceCIDR + " 10.0.2.15:7000\n")
	if string(out) != want.String() {
		t.Fatalf("the guest reads\n%s\nwant\n%s", out, want.String())
	}
	if got := Nodes[0].PodBridge(); got != "10.244.1.1/24" {
		t.Fatalf("node-a's cbr0: %s", got)
	}
}

// TestGuestInitHasNoAddressOfItsOwn keeps the topology in one place: the guest's init takes every address
// from topology.env.
func TestGuestInitHasNoAddressOfItsOwn(t *testing.T) {
	init, err := os.ReadFile(filepath.Join("..", "guest", "init"))
	if err != nil {
		t.Fatal(err)
	}
	addrs := make([]string, 0, 6+4*len(Nodes))
	addrs = append(addrs, GuestIP, NodeGateway, NodeCIDR, OutsideIP, ServiceCIDR, PodCIDR)
	for _, n := range Nodes {
		addrs = append(addrs, n.Name, n.IP, n.PodCIDR, n.PodGateway())
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
