package nftrules_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
	"github.com/ipvs-operator/ipvs-operator/ipvs/nftrules"
)

// detectLocalModes are the agent's --detect-local-mode values as the table options they become, on the
// topology of guardTopology (pods on the bridge cbr0, whose IP-layer input interface is the bridge).
var detectLocalModes = []struct {
	name  string
	opts  []nftrules.Option
	cidrs []string // what the agent hands Ensure in this mode
}{
	{name: "NodeCIDR", cidrs: []string{"10.244.1.0/24", "fd00:10:244:1::/64"}},
	{name: "ClusterCIDR", cidrs: []string{"10.244.0.0/16", "fd00:10:244::/56"}},
	{name: "BridgeInterface", opts: []nftrules.Option{nftrules.WithPodInterface("cbr0")}},
	{name: "InterfaceNamePrefix", opts: []nftrules.Option{nftrules.WithPodInterfacePrefix("cbr")}},
}

// TestModesAgainstKernel programs each mode's rules and compares nft's listing with Render.
func TestModesAgainstKernel(t *testing.T) {
	for _, m := range detectLocalModes {
		t.Run(m.name, func(t *testing.T) {
			n := newTestNS(t)
			tb, err := nftrules.New(append([]nftrules.Option{nftrules.WithNetNS(int(n.ns))}, m.opts...)...)
			if err != nil {
				t.Fatal(err)
			}
			defer tb.Close()
			cidrs := prefixes(m.cidrs...)
			if err := tb.Ensure(cidrs); err != nil {
				t.Fatal(err)
			}
			el := ipvs.RuleElements{ClusterIPs: addrs("10.96.0.10", "fd00::a"), Endpoints: addrs("10.244.1.2")}
			if err := tb.Update(el, ipvs.RuleElements{}); err != nil {
				t.Fatal(err)
			}
			if listed, rendered := listTable(t, n), nftrules.Render(cidrs, el, m.opts...); listed != rendered {
				t.Errorf("nft list table differs from Render:\n--- nft\n%s--- Render\n%s", listed, rendered)
			}
		})
	}
}

// TestGuardAgainstKernel sends real packets through each mode's guard: a pod reaches a ClusterIP, the
// outside host is refused at once, and the outside host forging a pod's address is dropped, proven by a
// counter behind the guard that counts the forged packets reaching a ClusterIP (none) and, as the control,
// the same forged packets reaching the node's own address (some: the forgery does arrive).
func TestGuardAgainstKernel(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no %s binary", tool)
		}
	}
	for _, m := range detectLocalModes {
		t.Run(m.name, func(t *testing.T) {
			topo := newGuardTopology(t)
			tb, err := nftrules.New(append([]nftrules.Option{nftrules.WithNetNS(int(topo.node))}, m.opts...)...)
			if err != nil {
				t.Fatal(err)
			}
			defer tb.Close()
			if err := tb.Ensure(prefixes(m.cidrs...)); err != nil {
				t.Fatal(err)
			}
			// The Service's port is open (the port filter); the guard alone decides who may use it.
			vip, vip6 := netip.MustParseAddr(guardVIP), netip.MustParseAddr(guardVIP6)
			open := ipvs.RuleElements{ClusterIPs: []netip.Addr{vip, vip6}, Ports: []ipvs.ServiceKey{
				{Address: vip, Protocol: ipvs.TCP, Port: 80}, {Address: vip6, Protocol: ipvs.TCP, Port: 80}}}
			if err := tb.Update(open, ipvs.RuleElements{}); err != nil {
				t.Fatal(err)
			}

			for _, addr := range []string{guardVIP + ":80", "[" + guardVIP6 + "]:80"} {
				if err := topo.dial(topo.pod, "", addr, 2*time.Second); err != nil {
					t.Errorf("a pod cannot reach the ClusterIP %s: %v", addr, err)
				}
				// Several in a row: an ICMP error that reaches the client while connect() holds its
				// socket is dropped (IPv6 over veths, 3 of 3 timed out before the guard sent TCP resets).
				for i := 0; i < 3; i++ {
					t0 := time.Now()
					err = topo.dial(topo.outside, "", addr, 2*time.Second)
					if !errors.Is(err, syscall.ECONNREFUSED) || time.Since(t0) > 500*time.Millisecond {
						t.Errorf("the outside host reaching the ClusterIP %s: %v after %s, want refused at once", addr, err, time.Since(t0))
					}
				}
			}
			// Forged: the outside host uses the address of a pod on this node.
			_ = topo.dial(topo.outside, guardForged, guardVIP+":80", 300*time.Millisecond)
			_ = topo.dial(topo.outside, guardForged, guardNodeIP+":80", 300*time.Millisecond)
			if got := topo.counter(t, "forged-to-vip"); got != 0 {
				t.Errorf("%d forged packets from the outside passed the guard to the ClusterIP, want 0", got)
			}
			if got := topo.counter(t, "forged-to-node"); got == 0 {
				t.Errorf("control: no forged packet reached the node's own address, so the test forged nothing")
			}
		})
	}
}

const (
	guardVIP    = "10.96.0.10"
	guardNodeIP = "192.168.100.11"
	guardForged = "10.244.1.250" // in node's pod CIDR 10.244.1.0/24, held by no pod
	guardVIP6   = "fd00:10:96::a"
)

// guardTopology is three network namespaces:
//
//	pod      eth0 10.244.1.2/24, default via 10.244.1.1
//	node     cbr0 10.244.1.1/24 (port veth-pod), eth1 192.168.100.11/24, the ClusterIP on lo, a listener on
//	         ClusterIP:80 and 192.168.100.11:80, and a counting table behind the guard
//	outside  eth0 192.168.100.200/24 and 10.244.1.250/32, 10.96.0.0/16 via 192.168.100.11
//
// and the same in IPv6 (no DAD): pod fd00:10:244:1::2/64, node cbr0 fd00:10:244:1::1/64, eth1
// fd00:192:168:100::11/64, the ClusterIP fd00:10:96::a on lo, outside fd00:192:168:100::200/64.
type guardTopology struct {
	node, pod, outside netns.NsHandle
	nodeName           string
}

// topologies counts the topologies made, for their names.
var topologies int

func newGuardTopology(t *testing.T) *guardTopology {
	t.Helper()
	topologies++ // unique names within this process, short enough for `ip netns`
	suffix := strconv.Itoa(os.Getpid()) + "-" + strconv.Itoa(topologies)
	names := map[string]string{"node": "gn" + suffix, "pod": "gp" + suffix, "outside": "go" + suffix}
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	for _, n := range names {
		ip("netns", "add", n)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", n).Run() })
	}
	nd, pd, od := names["node"], names["pod"], names["outside"]
	ip("-n", nd, "link", "add", "cbr0", "type", "bridge")
	ip("-n", nd, "link", "add", "veth-pod", "type", "veth", "peer", "name", "eth0", "netns", pd)
	ip("-n", nd, "link", "set", "veth-pod", "master", "cbr0")
	ip("-n", nd, "link", "add", "eth1", "type", "veth", "peer", "name", "eth0", "netns", od)
	ip("-n", nd, "addr", "add", "10.244.1.1/24", "dev", "cbr0")
	ip("-n", nd, "addr", "add", guardNodeIP+"/24", "dev", "eth1")
	ip("-n", nd, "addr", "add", guardVIP+"/32", "dev", "lo")
	for _, l := range []string{"lo", "cbr0", "veth-pod", "eth1"} {
		ip("-n", nd, "link", "set", l, "up")
	}
	ip("-n", pd, "addr", "add", "10.244.1.2/24", "dev", "eth0")
	ip("-n", od, "addr", "add", "192.168.100.200/24", "dev", "eth0")
	ip("-n", od, "addr", "add", guardForged+"/32", "dev", "eth0")
	for _, n := range []string{pd, od} {
		ip("-n", n, "link", "set", "lo", "up")
		ip("-n", n, "link", "set", "eth0", "up")
	}
	ip("-n", pd, "route", "add", "default", "via", "10.244.1.1")
	ip("-n", od, "route", "add", "10.96.0.0/16", "via", guardNodeIP)
	ip("-n", nd, "addr", "add", "fd00:10:244:1::1/64", "dev", "cbr0", "nodad")
	ip("-n", nd, "addr", "add", "fd00:192:168:100::11/64", "dev", "eth1", "nodad")
	ip("-n", nd, "addr", "add", guardVIP6+"/128", "dev", "lo", "nodad")
	ip("-n", pd, "addr", "add", "fd00:10:244:1::2/64", "dev", "eth0", "nodad")
	ip("-n", pd, "-6", "route", "add", "default", "via", "fd00:10:244:1::1")
	ip("-n", od, "addr", "add", "fd00:192:168:100::200/64", "dev", "eth0", "nodad")
	ip("-n", od, "-6", "route", "add", "fd00:10:96::/112", "via", "fd00:192:168:100::11")
	// Counters behind the guard (priority 10 runs after its priority 0).
	// Anonymous counters told apart by their comments: the lab's 6.1 guest refuses (ENOENT) rules that
	// reference named counter objects.
	probe := `table inet probe {
	chain in {
		type filter hook input priority 10; policy accept;
		ip saddr ` + guardForged + ` ip daddr ` + guardVIP + ` counter comment "forged-to-vip"
		ip saddr ` + guardForged + ` ip daddr ` + guardNodeIP + ` counter comment "forged-to-node"
	}
}`
	if out, err := exec.Command("ip", "netns", "exec", nd, "nft", probe).CombinedOutput(); err != nil {
		t.Fatalf("nft probe table: %v\n%s", err, out)
	}

	topo := &guardTopology{}
	for name, h := range map[string]*netns.NsHandle{"node": &topo.node, "pod": &topo.pod, "outside": &topo.outside} {
		ns, err := netns.GetFromName(names[name])
		if err != nil {
			t.Fatal(err)
		}
		*h = ns
		t.Cleanup(func() { ns.Close() })
	}
	topo.nodeName = nd
	for _, addr := range []string{guardVIP + ":80", guardNodeIP + ":80", "[" + guardVIP6 + "]:80"} {
		l, err := inNS(topo.node, func() (net.Listener, error) { return net.Listen("tcp", addr) })
		if err != nil {
			t.Fatal(err)
		}
		acceptAndClose(t, l)
	}
	return topo
}

// inNS runs f on a thread in ns: sockets made there stay in ns.
func inNS[T any](ns netns.NsHandle, f func() (T, error)) (T, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var zero T
	orig, err := netns.Get()
	if err != nil {
		return zero, err
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		return zero, err
	}
	v, err := f()
	if err2 := netns.Set(orig); err2 != nil {
		panic(fmt.Sprintf("cannot return to the original network namespace: %v", err2))
	}
	return v, err
}

// dial opens a TCP connection from ns (from the source address src, if given) and closes it.
func (g *guardTopology) dial(ns netns.NsHandle, src, addr string, timeout time.Duration) error {
	d := net.Dialer{Timeout: timeout}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := inNS(ns, func() (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) })
	if err == nil {
		c.Close()
	}
	return err
}

// counter reads the packets counted by the probe rule commented name, in the node's namespace.
func (g *guardTopology) counter(t *testing.T, name string) int {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", g.nodeName, "nft", "list", "chain", "inet", "probe", "in").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list chain inet probe in: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if !strings.Contains(line, `comment "`+name+`"`) {
			continue
		}
		_, after, ok := strings.Cut(line, "packets ")
		if !ok {
			t.Fatalf("no packet count in %q", line)
		}
		n, err := strconv.Atoi(strings.Fields(after)[0])
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	t.Fatalf("no rule commented %q in:\n%s", name, out)
	return 0
}
