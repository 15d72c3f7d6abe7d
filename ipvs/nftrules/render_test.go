package nftrules

import (
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
	"github.com/ipvs-operator/ipvs-operator/test/golden"
)

func TestRenderGolden(t *testing.T) {
	tests := []struct {
		name  string
		cidrs []string
		el    ipvs.RuleElements
		opts  []Option
	}{
		{name: "empty"},
		{
			name:  "dual-stack",
			cidrs: []string{"10.244.0.0/16", "fd00:10:244::/56"},
			el: ipvs.RuleElements{
				ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("10.96.0.1"), netip.MustParseAddr("fd00::a"), netip.MustParseAddr("10.96.0.1")},
				Endpoints:  []netip.Addr{netip.MustParseAddr("10.244.2.3"), netip.MustParseAddr("10.244.1.2"), netip.MustParseAddr("fd00:10:244::5")},
				Ports: []ipvs.ServiceKey{
					key("10.96.0.10", ipvs.UDP, 53), key("10.96.0.10", ipvs.TCP, 53), key("10.96.0.10", ipvs.TCP, 9153),
					key("10.96.0.1", ipvs.TCP, 443), key("10.96.0.1", ipvs.TCP, 443),
					key("fd00::a", ipvs.TCP, 80), key("fd00::a", ipvs.SCTP, 80), key("fd00::a", ipvs.UDP, 5353),
				},
			},
		},
		{
			// --detect-local-mode=BridgeInterface: the pod CIDR sets stay empty, the bridge is the match.
			name: "bridge-interface",
			el:   ipvs.RuleElements{ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("fd00::a")}},
			opts: []Option{WithPodInterface("cbr0")},
		},
		{
			// --detect-local-mode=InterfaceNamePrefix: nft's wildcard, one host veth per pod.
			name: "interface-name-prefix",
			el:   ipvs.RuleElements{ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("fd00::a")}},
			opts: []Option{WithPodInterfacePrefix("cali")},
		},
		{
			// Invalid input is left out, as Ensure and Update refuse it.
			name:  "invalid-left-out",
			cidrs: []string{"10.244.0.0/16"},
			el: ipvs.RuleElements{
				ClusterIPs: []netip.Addr{{}, netip.MustParseAddr("10.96.0.10")},
				// Only TCP, UDP and SCTP virtual servers exist; an invalid address is refused too.
				Ports: []ipvs.ServiceKey{key("10.96.0.10", ipvs.Protocol(1), 0), {Protocol: ipvs.TCP, Port: 80}, key("10.96.0.10", ipvs.TCP, 80)},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var cidrs []netip.Prefix
			for _, c := range tt.cidrs {
				cidrs = append(cidrs, netip.MustParsePrefix(c))
			}
			if tt.name == "invalid-left-out" {
				cidrs = append(cidrs, netip.Prefix{})
			}
			golden.Check(t, filepath.Join("testdata", "render-"+tt.name+".golden"), []byte(Render(cidrs, tt.el, tt.opts...)))
		})
	}
}

func key(addr string, p ipvs.Protocol, port uint16) ipvs.ServiceKey {
	return ipvs.ServiceKey{Address: netip.MustParseAddr(addr), Protocol: p, Port: port}
}

// TestPortKeys: the set key layout nft uses for (address . inet_proto . inet_service), as
// `nft --debug=netlink` prints it, and back.
func TestPortKeys(t *testing.T) {
	tests := []struct {
		key  ipvs.ServiceKey
		want []byte
	}{
		{key("10.96.0.10", ipvs.TCP, 80), []byte{10, 96, 0, 10, 6, 0, 0, 0, 0, 80, 0, 0}},
		{key("10.96.0.1", ipvs.SCTP, 443), []byte{10, 96, 0, 1, 132, 0, 0, 0, 0x01, 0xbb, 0, 0}},
		{key("fd00::a", ipvs.UDP, 53), []byte{0xfd, 15: 0x0a, 16: 17, 21: 53, 23: 0}},
	}
	for _, tt := range tests {
		t.Run(tt.key.String(), func(t *testing.T) {
			got := portKeys([]ipvs.ServiceKey{tt.key})[0]
			if string(got) != string(tt.want) {
				t.Fatalf("portKeys = % x, want % x", got, tt.want)
			}
			back, ok := parsePortKey(got)
			if !ok || back != tt.key {
				t.Errorf("parsePortKey = %v, %v; want %v", back, ok, tt.key)
			}
		})
	}
	for _, bad := range [][]byte{nil, make([]byte, 13), {10, 96, 0, 10, 1, 0, 0, 0, 0, 80, 0, 0}, {10, 96, 0, 10, 6, 1, 0, 0, 0, 80, 0, 0}} {
		if k, ok := parsePortKey(bad); ok {
			t.Errorf("parsePortKey(% x) = %v, want not ok", bad, k)
		}
	}
}

func TestRanges(t *testing.T) {
	tests := []struct {
		name   string
		cidrs  []string
		v4, v6 []string // rendered ranges
		elems4 int      // interval elements for the IPv4 set
	}{
		{name: "none"},
		{name: "one", cidrs: []string{"10.244.0.0/16"}, v4: []string{"10.244.0.0/16"}, elems4: 3},
		{name: "contained and unmasked", cidrs: []string{"10.244.3.9/24", "10.244.0.0/16"}, v4: []string{"10.244.0.0/16"}, elems4: 3},
		{name: "adjacent merge", cidrs: []string{"10.245.0.0/16", "10.244.0.0/16"}, v4: []string{"10.244.0.0/15"}, elems4: 3},
		{name: "adjacent, not a prefix", cidrs: []string{"10.1.0.0/16", "10.2.0.0/16"}, v4: []string{"10.1.0.0-10.2.255.255"}, elems4: 3},
		{name: "host", cidrs: []string{"192.168.7.7/32"}, v4: []string{"192.168.7.7"}, elems4: 3},
		{name: "from zero to the top", cidrs: []string{"0.0.0.0/0"}, v4: []string{"0.0.0.0/0"}, elems4: 1},
		{name: "families split", cidrs: []string{"fd00::/64", "10.0.0.0/8"}, v4: []string{"10.0.0.0/8"}, v6: []string{"fd00::/64"}, elems4: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ps []netip.Prefix
			for _, c := range tt.cidrs {
				ps = append(ps, netip.MustParsePrefix(c))
			}
			v4, v6, err := splitRanges(ps)
			if err != nil {
				t.Fatal(err)
			}
			if got := rangeStrings(v4); !equal(got, tt.v4) {
				t.Errorf("v4 = %v, want %v", got, tt.v4)
			}
			if got := rangeStrings(v6); !equal(got, tt.v6) {
				t.Errorf("v6 = %v, want %v", got, tt.v6)
			}
			if got := len(intervalElements(v4)); got != tt.elems4 {
				t.Errorf("%d interval elements, want %d", got, tt.elems4)
			}
		})
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestElementOpsChunks(t *testing.T) {
	var el ipvs.RuleElements
	for i := range maxElemsPerBatch + 10 {
		el.ClusterIPs = append(el.ClusterIPs, netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)}))
	}
	el.Endpoints = []netip.Addr{netip.MustParseAddr("fd00::1")}
	ops, err := elementOps(ipvs.RuleElements{}, el)
	if err != nil {
		t.Fatal(err)
	}
	// Removals only: two chunks for clusterips4, one for loop6.
	if len(ops) != 3 || ops[0].set != SetClusterIPs4 || len(ops[0].elems) != maxElemsPerBatch || ops[2].set != SetLoop6 || !ops[2].remove {
		t.Fatalf("ops = %d, first %s/%d", len(ops), ops[0].set, len(ops[0].elems))
	}
	if k := ops[2].elems[0].Key; len(k) != 32 {
		t.Errorf("loop6 key has %d bytes, want 32 (endpoint . endpoint)", len(k))
	}
}

// TestElementOpsOrder: a ClusterIP is added before its ports and removed after them, so an update split
// into batches never leaves a ClusterIP in the set without its ports' filter.
func TestElementOpsOrder(t *testing.T) {
	el := ipvs.RuleElements{
		ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("fd00::a")},
		Ports:      []ipvs.ServiceKey{key("10.96.0.10", ipvs.TCP, 80), key("fd00::a", ipvs.UDP, 53)},
	}
	ops, err := elementOps(el, el)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]string, 0, len(ops))
	for _, op := range ops {
		verb := "add"
		if op.remove {
			verb = "remove"
		}
		got = append(got, verb+" "+op.set)
	}
	want := []string{"remove clusterports4", "remove clusterports6", "remove clusterips4", "remove clusterips6",
		"add clusterips4", "add clusterips6", "add clusterports4", "add clusterports6"}
	if !equal(got, want) {
		t.Errorf("ops %v, want %v", got, want)
	}
}
