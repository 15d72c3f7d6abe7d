//go:build kernel

// The sync engine over the real netlink implementations, on a kernel with IPVS (the lab VM runs these as
// part of `make test`): adoption without flushing, a no-op restart, audit repair, and Cleanup, in a fresh
// network namespace each.
package syncer_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	mobyipvs "github.com/moby/ipvs"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"k8s.io/utils/clock"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
	"github.com/ipvs-operator/ipvs-operator/ipvs/host"
	"github.com/ipvs-operator/ipvs-operator/ipvs/nftrules"
	"github.com/ipvs-operator/ipvs-operator/ipvs/plan"
	"github.com/ipvs-operator/ipvs-operator/ipvs/syncer"
)

// kernelNS is a fresh network namespace with lo up and IPVS, or the test is skipped on a kernel without it.
func kernelNS(t *testing.T) (netns.NsHandle, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if _, err := host.LoadRequiredModules(); err != nil {
		t.Logf("loading modules: %v", err)
	}
	if _, err := netlink.GenlFamilyGet("IPVS"); err != nil {
		t.Skipf("this kernel has no IPVS (%v); run these tests in the lab VM", err)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	must(t, err)
	defer orig.Close()
	ns, err := netns.New()
	must(t, err)
	must(t, netns.Set(orig))
	t.Cleanup(func() { ns.Close() })
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	must(t, err)
	defer h.Close()
	lo, err := h.LinkByName("lo")
	must(t, err)
	must(t, h.LinkSetUp(lo))
	return ns, fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), int(ns))
}

type realKernel struct {
	ipvs  ipvs.Interface
	vips  ipvs.VIPs
	rules *nftrules.Table
}

func openKernel(t *testing.T, ns netns.NsHandle, path string) realKernel {
	t.Helper()
	i, err := ipvs.NewNetlinkInNamespace(path)
	must(t, err)
	v, err := ipvs.NewDummyVIPsInNamespace("ipvs0", path)
	must(t, err)
	r, err := nftrules.New(nftrules.WithNetNS(int(ns)))
	must(t, err)
	t.Cleanup(func() {
		i.(interface{ Close() error }).Close()
		v.(interface{ Close() error }).Close()
		r.Close()
	})
	return realKernel{i, v, r}
}

func TestKernelSyncerLifecycle(t *testing.T) {
	ctx := context.Background()
	ns, path := kernelNS(t)
	k := openKernel(t, ns, path)
	must(t, host.Probe(k.ipvs))

	// Someone else's virtual server, on an address that is not ours.
	foreign := ipvs.Service{ServiceKey: ipvs.ServiceKey{Address: netip.MustParseAddr("198.51.100.9"), Port: 80, Protocol: ipvs.TCP}, Scheduler: "wlc"}
	must(t, k.ipvs.AddService(foreign))

	vip := netip.MustParseAddr("10.96.0.10")
	dst := func(ip string) ipvs.Destination {
		return ipvs.Destination{DestinationKey: ipvs.DestinationKey{Address: netip.MustParseAddr(ip), Port: 8080}, Weight: 1}
	}
	want := plan.Desired{
		VIPs: []netip.Addr{vip},
		Servers: []ipvs.VirtualServer{{
			Service:      ipvs.Service{ServiceKey: ipvs.ServiceKey{Address: vip, Port: 80, Protocol: ipvs.TCP}, Scheduler: "rr"},
			Destinations: []ipvs.Destination{dst("10.244.1.2"), dst("10.244.1.3")},
		}},
		DrainTimeout: 30 * time.Second,
	}
	podCIDRs := syncer.Options{PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}}
	table := func() string {
		vs, err := ipvs.Snapshot(k.ipvs)
		must(t, err)
		return ipvs.Render(vs)
	}
	const programmed = "-A -t 10.96.0.10:80 -s rr\n" +
		"-a -t 10.96.0.10:80 -r 10.244.1.2:8080 -m -w 1\n" +
		"-a -t 10.96.0.10:80 -r 10.244.1.3:8080 -m -w 1\n"

	s := syncer.New(k.ipvs, k.vips, k.rules, clock.RealClock{}, podCIDRs)
	must(t, s.Adopt(ctx))
	res, err := s.SyncService(ctx, "ns/web", want)
	must(t, err)
	if got := table(); !strings.Contains(got, programmed) || !strings.Contains(got, "-A -t 198.51.100.9:80 -s wlc") {
		t.Fatalf("after the first sync (%d ops) the kernel holds\n%s", res.Ops, got)
	}
	if bound, _ := k.vips.List(); len(bound) != 1 || bound[0] != vip {
		t.Fatalf("VIPs on the dummy interface: %v", bound)
	}
	if els, _ := k.rules.Elements(); len(els.ClusterIPs) != 1 || len(els.Endpoints) != 2 ||
		len(els.Ports) != 1 || els.Ports[0] != want.Servers[0].ServiceKey {
		t.Fatalf("nftables elements: %+v", els)
	}

	// A restarted agent (new handles, new engine) adopts the state: no kernel operation for the same want.
	k2 := openKernel(t, ns, path)
	s2 := syncer.New(k2.ipvs, k2.vips, k2.rules, clock.RealClock{}, podCIDRs)
	must(t, s2.Adopt(ctx))
	res, err = s2.SyncService(ctx, "ns/web", want)
	must(t, err)
	if res.Ops != 0 {
		t.Fatalf("a restarted engine made %d kernel operations for an unchanged Service; want adoption, 0", res.Ops)
	}

	// Drift: someone deletes a real server, the VIP and the port element by hand; the audit puts them back.
	must(t, k.ipvs.DeleteDestination(want.Servers[0].ServiceKey, dst("10.244.1.3").DestinationKey))
	must(t, k.vips.Unbind(vip))
	must(t, k.rules.Update(ipvs.RuleElements{}, ipvs.RuleElements{Ports: []ipvs.ServiceKey{want.Servers[0].ServiceKey}}))
	must(t, s2.Audit(ctx))
	if els, _ := k.rules.Elements(); len(els.Ports) != 1 {
		t.Fatalf("the audit did not restore the port element: %+v", els)
	}
	if got := table(); !strings.Contains(got, programmed) {
		t.Fatalf("the audit did not repair the table:\n%s", got)
	}
	if bound, _ := k.vips.List(); len(bound) != 1 {
		t.Fatalf("the audit did not rebind the VIP: %v", bound)
	}

	// Cleanup removes what the agent owns and nothing else.
	must(t, s2.Cleanup(ctx))
	if got := table(); got != "-A -t 198.51.100.9:80 -s wlc\n" {
		t.Fatalf("after Cleanup the kernel holds\n%s\nwant only the foreign virtual server", got)
	}
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	must(t, err)
	defer h.Close()
	if _, err := h.LinkByName("ipvs0"); err == nil {
		t.Fatal("Cleanup left the dummy interface ipvs0")
	} else if !errors.As(err, new(netlink.LinkNotFoundError)) {
		t.Fatalf("looking up ipvs0: %v", err)
	}
	if _, err := k2.rules.Elements(); err == nil {
		t.Fatal("Cleanup left the nftables table")
	}
}

// TestKernelFailedAddServiceBindsNoVIP: the kernel refuses a virtual server (an unknown scheduler): its VIP
// is not bound, so the node does not start accepting every port on it, and its port is not opened; once the
// Service is fixed, both follow.
func TestKernelFailedAddServiceBindsNoVIP(t *testing.T) {
	ctx := context.Background()
	ns, path := kernelNS(t)
	k := openKernel(t, ns, path)
	must(t, host.Probe(k.ipvs))
	vip := netip.MustParseAddr("10.96.0.20")
	want := func(sched string) plan.Desired {
		return plan.Desired{VIPs: []netip.Addr{vip}, Servers: []ipvs.VirtualServer{{
			Service: ipvs.Service{ServiceKey: ipvs.ServiceKey{Address: vip, Port: 443, Protocol: ipvs.TCP}, Scheduler: sched},
		}}}
	}
	s := syncer.New(k.ipvs, k.vips, k.rules, clock.RealClock{}, syncer.Options{})
	must(t, s.Adopt(ctx))
	if _, err := s.SyncService(ctx, "ns/bad", want("no-such-scheduler")); err == nil {
		t.Fatal("the kernel took a virtual server with an unknown scheduler")
	}
	if bound, _ := k.vips.List(); len(bound) != 0 {
		t.Fatalf("VIPs bound after the failed AddService: %v", bound)
	}
	if els, _ := k.rules.Elements(); len(els.Ports) != 0 || len(els.ClusterIPs) != 1 {
		t.Fatalf("nftables elements after the failed AddService: %+v; want the ClusterIP guarded, no port open", els)
	}
	_, err := s.SyncService(ctx, "ns/bad", want("rr"))
	must(t, err)
	if bound, _ := k.vips.List(); len(bound) != 1 || bound[0] != vip {
		t.Fatalf("VIPs after the fix: %v", bound)
	}
	if els, _ := k.rules.Elements(); len(els.Ports) != 1 {
		t.Fatalf("nftables elements after the fix: %+v", els)
	}
}

// TestKernelDriftCanary loses the agent's state wholesale, each way it happens on a node, and checks that
// CheckDrift names the loss and Resync restores exactly what was programmed:
//   - IPVS flushed as kube-proxy's leftover cleanup does (moby/ipvs Flush, i.e. `ipvsadm -C`);
//   - the nftables ruleset flushed, as a firewall reload's `nft flush ruleset` does;
//   - the dummy interface deleted (`ip link del ipvs0`) or taken down (`ip link set ipvs0 down`).
func TestKernelDriftCanary(t *testing.T) {
	ctx := context.Background()
	ns, path := kernelNS(t)
	k := openKernel(t, ns, path)
	must(t, host.Probe(k.ipvs))
	link, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	must(t, err)
	defer link.Close()

	dst := func(ip string, port uint16) ipvs.Destination {
		return ipvs.Destination{DestinationKey: ipvs.DestinationKey{Address: netip.MustParseAddr(ip), Port: port}, Weight: 1}
	}
	server := func(vip string, port uint16, proto ipvs.Protocol, dests ...ipvs.Destination) ipvs.VirtualServer {
		return ipvs.VirtualServer{
			Service:      ipvs.Service{ServiceKey: ipvs.ServiceKey{Address: netip.MustParseAddr(vip), Port: port, Protocol: proto}, Scheduler: "rr"},
			Destinations: dests,
		}
	}
	services := map[string]plan.Desired{
		"ns/web": {VIPs: []netip.Addr{netip.MustParseAddr("10.96.0.10")}, DrainTimeout: 30 * time.Second, Servers: []ipvs.VirtualServer{
			server("10.96.0.10", 80, ipvs.TCP, dst("10.244.1.2", 8080), dst("10.244.1.3", 8080)),
			server("10.96.0.10", 53, ipvs.UDP, dst("10.244.1.2", 5353)),
		}},
		"ns/db": {VIPs: []netip.Addr{netip.MustParseAddr("10.96.0.20")}, DrainTimeout: 30 * time.Second, Servers: []ipvs.VirtualServer{
			server("10.96.0.20", 5432, ipvs.TCP, dst("10.244.2.7", 5432)),
		}},
		"ns/v6": {VIPs: []netip.Addr{netip.MustParseAddr("fd00::30")}, DrainTimeout: 30 * time.Second, Servers: []ipvs.VirtualServer{
			server("fd00::30", 443, ipvs.TCP, dst("fd00:244::5", 8443)),
		}},
	}
	state := func() string {
		vs, err := ipvs.Snapshot(k.ipvs)
		must(t, err)
		vips, err := k.vips.List()
		must(t, err)
		els, err := k.rules.Elements()
		must(t, err)
		return fmt.Sprintf("# vips: %v\n# nft: %v %v\n%s", vips, els.ClusterIPs, els.Endpoints, ipvs.Render(vs))
	}

	s := syncer.New(k.ipvs, k.vips, k.rules, clock.RealClock{}, syncer.Options{PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}})
	must(t, s.Adopt(ctx))
	for key, want := range services {
		_, err := s.SyncService(ctx, key, want)
		must(t, err)
	}
	must(t, s.Audit(ctx))
	want := state()
	const checks = 100
	t0 := time.Now()
	for range checks {
		if d, err := s.CheckDrift(ctx); d != syncer.NoDrift || err != nil {
			t.Fatalf("CheckDrift on an intact kernel = %q, %v", d, err)
		}
	}
	t.Logf("CheckDrift: %v per check", time.Since(t0)/checks)

	for _, tc := range []struct {
		name   string
		damage func() error
		drift  syncer.Drift
	}{
		{"IPVS flushed (ipvsadm -C)", func() error {
			h, err := mobyipvs.New(path)
			if err != nil {
				return err
			}
			defer h.Close()
			return h.Flush()
		}, syncer.DriftIPVS},
		{"nft flush ruleset", func() error {
			c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
			if err != nil {
				return err
			}
			c.FlushRuleset()
			return c.Flush()
		}, syncer.DriftTable},
		{"ip link del ipvs0", func() error {
			l, err := link.LinkByName("ipvs0")
			if err != nil {
				return err
			}
			return link.LinkDel(l)
		}, syncer.DriftInterface},
		{"ip link set ipvs0 down", func() error {
			l, err := link.LinkByName("ipvs0")
			if err != nil {
				return err
			}
			return link.LinkSetDown(l)
		}, syncer.DriftInterface},
	} {
		must(t, tc.damage())
		d, err := s.CheckDrift(ctx)
		if err != nil || d != tc.drift {
			t.Errorf("%s: CheckDrift = %q, %v; want %q", tc.name, d, err, tc.drift)
		}
		t0 := time.Now()
		must(t, s.Resync(ctx))
		t.Logf("%s: resync took %v", tc.name, time.Since(t0))
		if got := state(); got != want {
			t.Errorf("%s: after Resync the kernel holds\n%s\nwant\n%s", tc.name, got, want)
		}
		if d, err := s.CheckDrift(ctx); d != syncer.NoDrift || err != nil {
			t.Errorf("%s: CheckDrift after Resync = %q, %v", tc.name, d, err)
		}
		l, err := link.LinkByName("ipvs0")
		must(t, err)
		if l.Attrs().RawFlags&unix.IFF_UP == 0 {
			t.Errorf("%s: ipvs0 is down after Resync", tc.name)
		}
	}
}

// countingIPVS counts per-virtual-server reads and one-read dumps of the real kernel.
type countingIPVS struct {
	ipvs.Interface
	reads, dumps int
	read         []string            // the virtual servers read on their own
	dumped       map[string]struct{} // the virtual servers the last dump reported
}

func (c *countingIPVS) Destinations(k ipvs.ServiceKey) ([]ipvs.ObservedDestination, error) {
	c.reads++
	c.read = append(c.read, k.String())
	return c.Interface.Destinations(k)
}

func (c *countingIPVS) AllDestinations() (map[ipvs.ServiceKey][]ipvs.ObservedDestination, error) {
	c.dumps++
	all, err := c.Interface.(ipvs.DestinationDumper).AllDestinations()
	c.dumped = map[string]struct{}{}
	for k := range all {
		c.dumped[k.String()] = struct{}{}
	}
	return all, err
}

// TestKernelAuditReadsOneDump: with enough virtual servers the audit reads every real server from one read
// of the kernel's table (/proc/net/ip_vs of the agent's namespace), not one read per virtual server, and
// still repairs a weight and a real server changed by hand, leaving someone else's virtual server alone.
// Reading /proc/net/ip_vs is not atomic, and Debian's 6.12 skips a virtual server where a read crosses the
// seq_file's page (2 and 3 of 40 in two runs; 6.1 skipped none): those, and only those, are read on their own.
func TestKernelAuditReadsOneDump(t *testing.T) {
	ctx := context.Background()
	ns, path := kernelNS(t)
	k := openKernel(t, ns, path)
	must(t, host.Probe(k.ipvs))
	foreign := ipvs.Service{ServiceKey: ipvs.ServiceKey{Address: netip.MustParseAddr("198.51.100.9"), Port: 80, Protocol: ipvs.TCP}, Scheduler: "wlc"}
	must(t, k.ipvs.AddService(foreign))
	c := &countingIPVS{Interface: k.ipvs}
	s := syncer.New(c, k.vips, k.rules, clock.RealClock{}, syncer.Options{PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}})
	must(t, s.Adopt(ctx))
	const n = 40
	keys := make([]ipvs.ServiceKey, n)
	for i := range n {
		vip := netip.AddrFrom4([4]byte{10, 96, 1, byte(i + 1)})
		keys[i] = ipvs.ServiceKey{Address: vip, Port: 80, Protocol: ipvs.TCP}
		dests := make([]ipvs.Destination, 0, 3)
		for j := range 3 {
			dests = append(dests, ipvs.Destination{DestinationKey: ipvs.DestinationKey{
				Address: netip.AddrFrom4([4]byte{10, 244, byte(j + 1), byte(i + 1)}), Port: 8080}, Weight: 1})
		}
		_, err := s.SyncService(ctx, fmt.Sprintf("ns/s%02d", i), plan.Desired{VIPs: []netip.Addr{vip}, DrainTimeout: 30 * time.Second,
			Servers: []ipvs.VirtualServer{{Service: ipvs.Service{ServiceKey: keys[i], Scheduler: "rr"}, Destinations: dests}}})
		must(t, err)
	}
	render := func() string {
		vs, err := ipvs.Snapshot(k.ipvs)
		must(t, err)
		return ipvs.Render(vs)
	}
	want := render()

	must(t, k.ipvs.UpdateDestination(keys[3], ipvs.Destination{DestinationKey: ipvs.DestinationKey{
		Address: netip.MustParseAddr("10.244.1.4"), Port: 8080}, Weight: 7}))
	must(t, k.ipvs.DeleteDestination(keys[9], ipvs.DestinationKey{Address: netip.MustParseAddr("10.244.2.10"), Port: 8080}))
	c.reads, c.dumps, c.read = 0, 0, nil
	must(t, s.Audit(ctx))
	for _, k := range c.read {
		if _, ok := c.dumped[k]; ok {
			t.Errorf("the audit read %s on its own, though the dump reported it", k)
		}
	}
	if c.dumps != 1 || c.reads > n/4 {
		t.Errorf("the audit of %d virtual servers made %d dumps and %d per-server reads (%v); want 1 and a few the dump missed", n, c.dumps, c.reads, c.read)
	}
	t.Logf("the audit made %d dump and %d per-server reads of what the dump missed %v", c.dumps, c.reads, c.read)
	if got := render(); got != want {
		t.Errorf("after the audit the kernel holds\n%s\nwant\n%s", got, want)
	}
	if !strings.Contains(want, "-A -t 198.51.100.9:80 -s wlc") {
		t.Errorf("someone else's virtual server is gone:\n%s", want)
	}
}
