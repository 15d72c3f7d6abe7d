package kubelet

import (
	"net"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func mustCIDR(t *testing.T, s string) *net.IPNet {
	t.Helper()
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestIPAMAllocatesFromTwoToBroadcastMinusOne(t *testing.T) {
	ipam, err := NewIPAM(mustCIDR(t, "10.244.1.0/29")) // .2 .. .6
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.244.1.2", "10.244.1.3", "10.244.1.4", "10.244.1.5", "10.244.1.6"}
	for i, w := range want {
		ip, err := ipam.Allocate(string(rune('a' + i)))
		if err != nil || ip.String() != w {
			t.Fatalf("allocation %d = %v, %v; want %s", i, ip, err, w)
		}
	}
	if ip, err := ipam.Allocate("z"); err == nil {
		t.Fatalf("allocated %s from a full range", ip)
	}
	// An owner asking again keeps its address.
	if ip, _ := ipam.Allocate("c"); ip.String() != "10.244.1.4" {
		t.Errorf("re-allocation for c = %s", ip)
	}
	ipam.Release("b")
	if ip, err := ipam.Allocate("z"); err != nil || ip.String() != "10.244.1.3" {
		t.Errorf("after release got %v, %v; want the freed 10.244.1.3", ip, err)
	}
	if ipam.InUse() != 5 {
		t.Errorf("InUse = %d", ipam.InUse())
	}
}

func TestIPAMRoundRobinDelaysReuse(t *testing.T) {
	ipam, _ := NewIPAM(mustCIDR(t, "10.244.1.0/24"))
	a, _ := ipam.Allocate("a")
	ipam.Release("a")
	b, _ := ipam.Allocate("b")
	if a.Equal(b) {
		t.Errorf("a just-released address %s was handed out again at once", a)
	}
}

func TestIPAMReserve(t *testing.T) {
	cases := []struct {
		name    string
		owner   string
		ip      string
		wantErr bool
	}{
		{"free address", "p1", "10.244.1.10", false},
		{"same owner same address", "p1", "10.244.1.10", false},
		{"same owner other address", "p1", "10.244.1.11", true},
		{"taken by another", "p2", "10.244.1.10", true},
		{"gateway", "p3", "10.244.1.1", true},
		{"network", "p3", "10.244.1.0", true},
		{"broadcast", "p3", "10.244.1.255", true},
		{"other CIDR", "p3", "10.244.2.7", true},
	}
	ipam, _ := NewIPAM(mustCIDR(t, "10.244.1.0/24"))
	for _, c := range cases {
		err := ipam.Reserve(c.owner, net.ParseIP(c.ip))
		if (err != nil) != c.wantErr {
			t.Errorf("%s: Reserve(%s, %s) = %v", c.name, c.owner, c.ip, err)
		}
	}
	// Allocation skips reserved addresses and returns the reservation to its owner.
	if ip, _ := ipam.Allocate("p1"); ip.String() != "10.244.1.10" {
		t.Errorf("owner of a reservation got %s", ip)
	}
	if ip, ok := ipam.Lookup("p1"); !ok || ip.String() != "10.244.1.10" {
		t.Errorf("Lookup = %v %v", ip, ok)
	}
}

func TestIPAMRejectsTinyOrIPv6(t *testing.T) {
	for _, s := range []string{"10.0.0.0/31", "fd00::/64"} {
		if _, err := NewIPAM(mustCIDR(t, s)); err == nil {
			t.Errorf("NewIPAM(%s) accepted", s)
		}
	}
}

func TestIPv6PairAndGateways(t *testing.T) {
	_, v4, _ := net.ParseCIDR("10.244.1.0/24")
	_, v6, _ := net.ParseCIDR("fd00:10:244:1::/64")
	for _, c := range []struct{ ip4, want string }{
		{"10.244.1.2", "fd00:10:244:1::2"},
		{"10.244.1.254", "fd00:10:244:1::fe"},
	} {
		if got := IPv6Pair(net.ParseIP(c.ip4), v4, v6); !got.Equal(net.ParseIP(c.want)) {
			t.Errorf("IPv6Pair(%s) = %s, want %s", c.ip4, got, c.want)
		}
	}
	if got := gateway(v6); !got.Equal(net.ParseIP("fd00:10:244:1::1")) {
		t.Errorf("gateway(%s) = %s", v6, got)
	}
	if got := gateway(v4); !got.Equal(net.ParseIP("10.244.1.1")) {
		t.Errorf("gateway(%s) = %s", v4, got)
	}
}

func TestDualStackPodStatus(t *testing.T) {
	st := computePodStatus(&corev1.Pod{}, podSnapshot{HostIP: "192.168.100.11", HostIPv6: "fd00::11",
		PodIP: "10.244.1.2", PodIPv6: "fd00:10:244:1::2"}, metav1.Now())
	if st.PodIP != "10.244.1.2" || len(st.PodIPs) != 2 || st.PodIPs[1].IP != "fd00:10:244:1::2" {
		t.Errorf("pod IPs = %s %v, want IPv4 first, then IPv6", st.PodIP, st.PodIPs)
	}
	if len(st.HostIPs) != 2 || st.HostIPs[1].IP != "fd00::11" {
		t.Errorf("host IPs = %v", st.HostIPs)
	}
}
