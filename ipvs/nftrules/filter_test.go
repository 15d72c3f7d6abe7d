package nftrules_test

import (
	"errors"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
)

// do runs fn on a thread inside the namespace: sockets it opens stay in the namespace.
func (n *testNS) do(t *testing.T, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	if err := netns.Set(n.ns); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			panic(err)
		}
	}()
	fn()
}

// TestPortFilterPackets sends real packets from a pod (a namespace on a veth) through the node's port
// filter, IPv4 and IPv6, with no IPVS (the filter runs before IPVS, and the host kernel may have none): the
// ClusterIPs are on the node's lo, where, as on the dummy interface, the node's own listeners answer every
// port. A new connection to a (ClusterIP, protocol, port) in the set gets through; to any other port it is
// refused at once (TCP connect fails with ECONNREFUSED, a UDP datagram draws an ICMP port-unreachable),
// although something listens there.
func TestPortFilterPackets(t *testing.T) {
	tb, n := newTable(t)
	pod := newTestNS(t)
	vip4, vip6 := netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("fd00::10")
	n.do(t, func() {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "veth-node"}, PeerName: "veth-pod", PeerNamespace: netlink.NsFd(pod.ns)}
		if err := netlink.LinkAdd(veth); err != nil {
			t.Fatalf("ip link add veth: %v", err)
		}
	})
	for _, c := range []struct {
		ns   *testNS
		args []string
	}{
		{n, []string{"link", "set", "lo", "up"}},
		{n, []string{"link", "set", "veth-node", "up"}},
		{n, []string{"addr", "add", vip4.String() + "/32", "dev", "lo"}},
		{n, []string{"-6", "addr", "add", vip6.String() + "/128", "dev", "lo", "nodad"}},
		{n, []string{"addr", "add", "10.244.0.1/24", "dev", "veth-node"}},
		{n, []string{"-6", "addr", "add", "fd00:10:244::1/64", "dev", "veth-node", "nodad"}},
		{pod, []string{"link", "set", "lo", "up"}},
		{pod, []string{"link", "set", "veth-pod", "up"}},
		{pod, []string{"addr", "add", "10.244.0.2/24", "dev", "veth-pod"}},
		{pod, []string{"-6", "addr", "add", "fd00:10:244::2/64", "dev", "veth-pod", "nodad"}},
		{pod, []string{"route", "add", "default", "via", "10.244.0.1"}},
		{pod, []string{"-6", "route", "add", "default", "via", "fd00:10:244::1"}},
	} {
		if out, err := c.ns.run("ip", c.args...); err != nil {
			t.Fatalf("ip %v: %v\n%s", c.args, err, out)
		}
	}
	if err := tb.Ensure(prefixes("10.244.0.0/16", "fd00:10:244::/56")); err != nil {
		t.Fatal(err)
	}
	const open, closed = 8080, 10271 // closed: a node port (the agent's) that is no Service port
	els := ipvs.RuleElements{ClusterIPs: []netip.Addr{vip4, vip6}}
	for _, v := range []netip.Addr{vip4, vip6} {
		els.Ports = append(els.Ports, ipvs.ServiceKey{Address: v, Protocol: ipvs.TCP, Port: open},
			ipvs.ServiceKey{Address: v, Protocol: ipvs.UDP, Port: open})
	}
	if err := tb.Update(els, ipvs.RuleElements{}); err != nil {
		t.Fatal(err)
	}

	// Listeners on every address, as the kubelet or sshd listen, on both ports.
	n.do(t, func() {
		for _, port := range []int{open, closed} {
			l, err := net.Listen("tcp", ":"+strconv.Itoa(port))
			if err != nil {
				t.Fatal(err)
			}
			acceptAndClose(t, l)
			// Bound to each VIP, so that replies come from the address the pod sent to.
			for _, v := range []netip.Addr{vip4, vip6} {
				pc, err := net.ListenPacket("udp", netip.AddrPortFrom(v, uint16(port)).String())
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { pc.Close() })
				go echo(pc)
			}
		}
	})

	tests := []struct {
		proto string
		vip   netip.Addr
		port  uint16
		open  bool
	}{
		{"tcp", vip4, open, true}, {"tcp", vip4, closed, false}, {"udp", vip4, open, true}, {"udp", vip4, closed, false},
		{"tcp", vip6, open, true}, {"tcp", vip6, closed, false}, {"udp", vip6, open, true}, {"udp", vip6, closed, false},
	}
	for _, tt := range tests {
		target := netip.AddrPortFrom(tt.vip, tt.port).String()
		t.Run(tt.proto+" "+target, func(t *testing.T) {
			var err error
			start := time.Now()
			pod.do(t, func() {
				var c net.Conn
				if c, err = net.DialTimeout(tt.proto, target, 3*time.Second); err != nil {
					return
				}
				defer c.Close()
				if tt.proto == "udp" {
					_ = c.SetDeadline(time.Now().Add(3 * time.Second))
					if _, err = c.Write([]byte("ping")); err == nil {
						_, err = c.Read(make([]byte, 64))
					}
				}
			})
			took := time.Since(start)
			switch {
			case tt.open && err != nil:
				t.Errorf("a Service port was refused: %v", err)
			case !tt.open && !errors.Is(err, unix.ECONNREFUSED):
				t.Errorf("a port with no virtual server: %v after %v, want ECONNREFUSED (the reject)", err, took)
			case !tt.open && took > time.Second:
				t.Errorf("refused after %v: the client must fail fast", took)
			}
		})
	}
}

func echo(pc net.PacketConn) {
	buf := make([]byte, 64)
	for {
		k, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		_, _ = pc.WriteTo(buf[:k], from)
	}
}

// acceptAndClose accepts and closes every connection to l, as a listener of the node (the kubelet, sshd)
// that answers, until the test ends.
func acceptAndClose(t *testing.T, l net.Listener) {
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}
