package kubelet

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// requireNetAdmin skips unless the test can make network namespaces with iproute2.
func requireNetAdmin(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	for _, ip := range []string{"/usr/sbin/ip", "/sbin/ip", "/bin/ip"} {
		if _, err := os.Stat(ip); err == nil {
			return ip
		}
	}
	t.Skip("iproute2 not installed")
	return ""
}

// newTestNetns makes a throwaway network namespace, labtest<pid>-<suffix>, through a netnsManager as the
// kubelet has one (pod namespaces named in the host's mount namespace), and deletes it when the test ends.
// It skips where namespaces cannot be made.
func newTestNetns(ctx context.Context, t *testing.T, suffix string) (*netnsManager, string) {
	t.Helper()
	ipCmd := requireNetAdmin(t)
	mounts, err := startMountNamespaceRunner(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	prefix := fmt.Sprintf("labtest%d-", os.Getpid())
	mgr := &netnsManager{ipCommand: ipCmd, dir: "/var/run/netns", prefix: prefix, mounts: mounts}
	name := prefix + suffix
	if err := mgr.Create(ctx, name); err != nil {
		t.Skipf("cannot make network namespaces here: %v", err)
	}
	t.Cleanup(func() { _ = mgr.Delete(ctx, name) })
	return mgr, name
}

// inNetns runs fn on a thread inside ns; sockets fn creates stay in ns.
func inNetns(t *testing.T, ns netns.NsHandle, fn func()) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			done <- err
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			done <- err
			return
		}
		fn()
		if err := netns.Set(orig); err != nil {
			done <- err // the thread stays locked and dies with this goroutine
			return
		}
		runtime.UnlockOSThread()
		done <- nil
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestPodNetworkOnABridge builds a throwaway "node" namespace with a pod bridge, plugs two pods into it the
// way the kubelet does, and checks addressing, hairpin mode, pod-to-pod traffic and teardown.
func TestPodNetworkOnABridge(t *testing.T) {
	ctx := context.Background()
	mgr, nodeName := newTestNetns(ctx, t, "node")
	nodeNS, err := netns.GetFromPath(mgr.Path(nodeName))
	if err != nil {
		t.Fatal(err)
	}
	defer nodeNS.Close()

	cidr := mustCIDR(t, "10.250.1.0/24")
	nl, err := netlink.NewHandleAt(nodeNS)
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	bridge := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "cbr0"}}
	if err := nl.LinkAdd(bridge); err != nil {
		t.Fatal(err)
	}
	if err := nl.AddrAdd(bridge, &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP("10.250.1.1"), Mask: cidr.Mask}}); err != nil {
		t.Fatal(err)
	}
	if err := nl.LinkSetUp(bridge); err != nil {
		t.Fatal(err)
	}

	network := &podNetwork{node: nodeNS, bridge: "cbr0", cidr: cidr}
	ipam, _ := NewIPAM(cidr)
	type plugged struct {
		name, veth string
		ns         netns.NsHandle
		ip         net.IP
	}
	pods := make([]plugged, 0, 2)
	for _, p := range []string{"a", "b"} {
		name := mgr.prefix + p
		if err := mgr.Create(ctx, name); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = mgr.Delete(ctx, name) })
		ns, err := netns.GetFromPath(mgr.Path(name))
		if err != nil {
			t.Fatal(err)
		}
		defer ns.Close()
		ip, _ := ipam.Allocate(name)
		iface, err := network.Setup(ns, hostVethName(name), ip)
		if err != nil {
			t.Fatalf("Setup %s: %v", name, err)
		}
		if !iface.Gateway.Equal(net.ParseIP("10.250.1.1")) {
			t.Errorf("gateway = %s", iface.Gateway)
		}
		pods = append(pods, plugged{name: name, veth: iface.HostVeth, ns: ns, ip: ip})
	}

	for _, p := range pods {
		on, err := network.hairpinOn(p.veth)
		if err != nil || !on {
			t.Errorf("hairpin on %s = %v, %v", p.veth, on, err)
		}
		h, _ := netlink.NewHandleAt(p.ns)
		eth0, err := h.LinkByName("eth0")
		if err != nil {
			t.Fatalf("%s: no eth0: %v", p.name, err)
		}
		addrs, _ := h.AddrList(eth0, netlink.FAMILY_V4)
		if len(addrs) != 1 || !addrs[0].IP.Equal(p.ip) {
			t.Errorf("%s eth0 addresses = %v", p.name, addrs)
		}
		routes, _ := h.RouteList(eth0, netlink.FAMILY_V4)
		hasDefault := false
		for _, r := range routes {
			if (r.Dst == nil || r.Dst.String() == "0.0.0.0/0") && r.Gw.Equal(net.ParseIP("10.250.1.1")) {
				hasDefault = true
			}
		}
		if !hasDefault {
			t.Errorf("%s routes = %v, want default via 10.250.1.1", p.name, routes)
		}
		h.Close()
	}

	// b listens, a connects across the bridge; a also reaches the gateway (the node).
	var l net.Listener
	inNetns(t, pods[1].ns, func() { l, err = net.Listen("tcp", net.JoinHostPort(pods[1].ip.String(), "7070")) })
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "from-b\n")
			c.Close()
		}
	}()
	var got string
	inNetns(t, pods[0].ns, func() {
		c, derr := net.DialTimeout("tcp", net.JoinHostPort(pods[1].ip.String(), "7070"), 3*time.Second)
		if derr != nil {
			err = derr
			return
		}
		defer c.Close()
		got, err = bufio.NewReader(c).ReadString('\n')
	})
	if err != nil || got != "from-b\n" {
		t.Fatalf("pod a -> pod b: %q, %v", got, err)
	}

	// Teardown removes the bridge port; the pod's eth0 goes with it.
	if err := network.Teardown(pods[0].veth); err != nil {
		t.Fatal(err)
	}
	if _, err := nl.LinkByName(pods[0].veth); err == nil {
		t.Error("host veth still present after Teardown")
	}
	if err := network.Teardown(pods[0].veth); err != nil {
		t.Errorf("second Teardown: %v", err)
	}
	// Setting up again (kubelet restart) replaces stale state rather than failing.
	if err := mgr.Create(ctx, pods[1].name); err != nil {
		t.Fatal(err)
	}
	fresh, _ := netns.GetFromPath(mgr.Path(pods[1].name))
	defer fresh.Close()
	if _, err := network.Setup(fresh, pods[1].veth, pods[1].ip); err != nil {
		t.Errorf("re-setup over a stale veth: %v", err)
	}
	names, _ := mgr.List()
	if len(names) != 3 {
		t.Errorf("List = %v", names)
	}
}
