package lab

import (
	"regexp"
	"strings"
	"testing"
)

// guest/init reads its addresses from topology.env: every topology variable it uses must be defined there
// (a typo would make an empty address, and busybox's ip fails with a message far from the cause).
func TestGuestInitUsesOnlyTopologyVariables(t *testing.T) {
	defined := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(topologyEnv())), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok || v == "" || strings.ContainsAny(v, " '\"$") {
			t.Fatalf("topology.env line %q: want NAME=value with a plain value", line)
		}
		defined[k] = v
	}
	used := regexp.MustCompile(`\$\{?((?:NODE\d*|ROOT|OUTSIDE|SERVICE|POD)_[A-Z0-9_]+)`).FindAllStringSubmatch(string(guestInit), -1)
	if len(used) < 20 {
		t.Fatalf("guest/init uses %d topology variables; it should build its network from them", len(used))
	}
	for _, m := range used {
		if _, ok := defined[m[1]]; !ok {
			t.Errorf("guest/init uses $%s, which topology.env does not define", m[1])
		}
	}
	for k, want := range map[string]string{
		"NODE0_NAME": "node-a", "NODE0_POD_GW": "10.244.1.1/24", "NODE1_POD_GW6": "fd00:10:244:2::1/64",
		"NODE_PREFIX6": "64", "SERVICE_CIDR6": ServiceCIDRv6, "OUTSIDE_IP": OutsideIP,
	} {
		if defined[k] != want {
			t.Errorf("%s = %q, want %q", k, defined[k], want)
		}
	}
}

// The guest's own numbers in init (the qemu user network) are the only addresses left there.
func TestGuestInitHasNoLabAddresses(t *testing.T) {
	body := string(guestInit)
	if i := strings.Index(body, "# ---- the topology"); i >= 0 {
		body = body[i:]
	}
	for _, a := range []string{"192.168.100.", "10.244.", "10.96.", "fd00:"} {
		if strings.Contains(body, a) {
			t.Errorf("guest/init spells out %s... after its header: take it from topology.env", a)
		}
	}
}
