//go:build kernel

// Real-kernel tests, for the lab VM (a kernel with IPVS and the dummy driver): each test programs a fresh
// network namespace. Build with `CGO_ENABLED=0 go test -tags kernel -c ./ipvs` and run the binary as root
// in the VM. On a kernel without IPVS every test skips and says why.
package ipvs_test

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
	"github.com/ipvs-operator/ipvs-operator/ipvs/host"
	"github.com/ipvs-operator/ipvs-operator/ipvs/nftrules"
)

var loadOnce sync.Once

// requireKernel loads the modules once (before any IPVS handle exists: moby/ipvs resolves the IPVS
// netlink family once per process) and skips unless the kernel has IPVS.
func requireKernel(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	loadOnce.Do(func() {
		missing, err := host.LoadRequiredModules()
		if len(missing) > 0 {
			t.Logf("schedulers not available: %v", missing)
		}
		if err != nil {
			t.Logf("loading modules: %v", err)
		}
	})
	if _, err := netlink.GenlFamilyGet("IPVS"); err != nil {
		t.Skipf("this kernel has no IPVS (generic netlink family IPVS: %v); run these tests in the lab VM", err)
	}
}

// kernelIPVS returns a netlink Interface for a fresh namespace, proven to work by host.Probe.
func kernelIPVS(t *testing.T) (*testNS, ipvs.Interface) {
	t.Helper()
	requireKernel(t)
	n := newTestNS(t)
	i, err := ipvs.NewNetlinkInNamespace(n.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { i.(interface{ Close() error }).Close() })
	if err := host.Probe(i); err != nil {
		t.Fatalf("Probe: %v", err)
	}
	return n, i
}

func key(addrPort string, p ipvs.Protocol) ipvs.ServiceKey {
	ap := netip.MustParseAddrPort(addrPort)
	return ipvs.ServiceKey{Address: ap.Addr(), Port: ap.Port(), Protocol: p}
}

func TestKernelServicesAndDestinations(t *testing.T) {
	_, i := kernelIPVS(t)
	k := key("10.96.0.10:80", ipvs.TCP)
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	must("AddService", i.AddService(ipvs.Service{ServiceKey: k, Scheduler: "rr"}))

	errCases := []struct {
		name     string
		err      error
		errno    unix.Errno
		sentinel error
	}{
		{"duplicate service", i.AddService(ipvs.Service{ServiceKey: k, Scheduler: "rr"}), unix.EEXIST, ipvs.ErrExists},
		{"update missing service", i.UpdateService(ipvs.Service{ServiceKey: key("10.96.0.99:80", ipvs.TCP), Scheduler: "rr"}), unix.ESRCH, ipvs.ErrNotFound},
		{"delete missing service", i.DeleteService(key("10.96.0.99:80", ipvs.TCP)), unix.ESRCH, ipvs.ErrNotFound},
		{"real server of missing service", i.AddDestination(key("10.96.0.99:80", ipvs.TCP), dst("10.244.1.2:8080", 1)), unix.ESRCH, ipvs.ErrNotFound},
		{"update missing real server", i.UpdateDestination(k, dst("10.244.9.9:8080", 1)), unix.ENOENT, ipvs.ErrNotFound},
		{"delete missing real server", i.DeleteDestination(k, dst("10.244.9.9:8080", 1).DestinationKey), unix.ENOENT, ipvs.ErrNotFound},
		{"unknown scheduler", i.AddService(ipvs.Service{ServiceKey: key("10.96.0.98:80", ipvs.TCP), Scheduler: "nope"}), unix.ENOENT, ipvs.ErrSchedulerNotFound},
	}
	for _, c := range errCases {
		if !errors.Is(c.err, c.errno) {
			t.Errorf("%s: err = %v, want errno %v", c.name, c.err, c.errno)
		}
		for _, s := range []error{ipvs.ErrExists, ipvs.ErrNotFound, ipvs.ErrSchedulerNotFound} {
			if got := errors.Is(c.err, s); got != errors.Is(s, c.sentinel) {
				t.Errorf("%s: errors.Is(%v, %v) = %v", c.name, c.err, s, got)
			}
		}
	}
	if _, err := i.Service(key("10.96.0.99:80", ipvs.TCP)); !errors.Is(err, ipvs.ErrNotFound) || !errors.Is(err, unix.ESRCH) {
		t.Errorf("Service of a missing service = %v, want ErrNotFound (ESRCH)", err)
	}
	if got, err := i.Service(k); err != nil || got != (ipvs.Service{ServiceKey: k, Scheduler: "rr"}) {
		t.Errorf("Service(%s) = %+v, %v", k, got, err)
	}
	if _, err := i.Destinations(key("10.96.0.99:80", ipvs.TCP)); !errors.Is(err, ipvs.ErrNotFound) {
		t.Errorf("Destinations of a missing service = %v, want ErrNotFound", err)
	}
	if d, err := i.Destinations(k); err != nil || len(d) != 0 {
		t.Errorf("Destinations of an empty service = %v, %v", d, err)
	}

	must("AddDestination", i.AddDestination(k, dst("10.244.1.2:8080", 1)))
	must("AddDestination", i.AddDestination(k, dst("10.244.2.3:8080", 1)))
	if err := i.AddDestination(k, dst("10.244.1.2:8080", 5)); !errors.Is(err, ipvs.ErrExists) || !errors.Is(err, unix.EEXIST) {
		t.Errorf("duplicate real server: %v", err)
	}
	must("UpdateDestination", i.UpdateDestination(k, dst("10.244.1.2:8080", 0)))
	must("UpdateService", i.UpdateService(ipvs.Service{ServiceKey: k, Scheduler: "lc", Persistence: 3 * time.Hour}))

	svcs, err := i.Services()
	must("Services", err)
	want := ipvs.Service{ServiceKey: k, Scheduler: "lc", Persistence: 3 * time.Hour}
	if !slices.Contains(svcs, want) {
		t.Errorf("Services() = %+v, want %+v among them", svcs, want)
	}
	dsts, err := i.Destinations(k)
	must("Destinations", err)
	slices.SortFunc(dsts, func(a, b ipvs.ObservedDestination) int { return a.Address.Compare(b.Address) })
	wantD := []ipvs.ObservedDestination{{Destination: dst("10.244.1.2:8080", 0)}, {Destination: dst("10.244.2.3:8080", 1)}}
	if !reflect.DeepEqual(dsts, wantD) {
		t.Errorf("Destinations() = %+v, want %+v (UpdateService must keep real servers)", dsts, wantD)
	}
	must("DeleteDestination", i.DeleteDestination(k, dst("10.244.2.3:8080", 1).DestinationKey))
	must("DeleteService", i.DeleteService(k))
	if svcs, _ := i.Services(); len(svcs) != 0 {
		t.Errorf("Services() after delete = %+v", svcs)
	}
}

// kernelTable is a table of every kind of virtual server the agent programs.
var kernelTable = []ipvs.VirtualServer{
	svc("10.96.0.10", 53, ipvs.UDP, "rr", 0, dst("10.244.1.2:53", 1), dst("10.244.2.3:53", 1)),
	svc("10.96.0.10", 53, ipvs.TCP, "rr", 0, dst("10.244.2.3:53", 1), dst("10.244.1.2:53", 1)),
	svc("10.96.0.1", 443, ipvs.TCP, "rr", 10800*time.Second, dst("192.168.10.2:6443", 1)),
	svc("10.96.5.5", 9000, ipvs.SCTP, "wrr", 0, dst("10.244.1.9:9000", 0), dst("10.244.1.9:8999", 3)),
	svc("192.168.0.1", 80, ipvs.TCP, "rr", 0), // sorts before 10.96/16 in ipvsadm
	svc("fd00::10", 53, ipvs.UDP, "rr", 0, dst("[fd00:10:244::3]:5353", 1), dst("[fd00:10:244::2]:5353", 1)),
	svc("fd00::1", 443, ipvs.TCP, "rr", 30*time.Second, dst("[fd00:10:244::7]:8443", 2)),
}

// TestKernelMatchesIpvsadm programs every kind of virtual server, reads the table back, and compares
// Render(Snapshot) with Render(desired) and with the real `ipvsadm -Sn`.
func TestKernelMatchesIpvsadm(t *testing.T) {
	n, i := kernelIPVS(t)
	for _, v := range kernelTable {
		if err := i.AddService(v.Service); err != nil {
			t.Fatalf("AddService %s: %v", v.ServiceKey, err)
		}
		for _, d := range v.Destinations {
			if err := i.AddDestination(v.ServiceKey, d); err != nil {
				t.Fatalf("AddDestination %s %s: %v", v.ServiceKey, d.DestinationKey, err)
			}
		}
	}
	snap, err := ipvs.Snapshot(i)
	if err != nil {
		t.Fatal(err)
	}
	got, want := ipvs.Render(snap), ipvs.Render(kernelTable)
	if got != want {
		t.Errorf("Render(Snapshot) differs from the programmed table:\n--- kernel\n%s--- desired\n%s", got, want)
	}
	if _, err := exec.LookPath("ipvsadm"); err != nil {
		t.Skip("no ipvsadm to compare with")
	}
	out, err := n.run("ipvsadm", "-Sn")
	if err != nil {
		t.Fatalf("ipvsadm -Sn: %v\n%s", err, out)
	}
	if out != got {
		t.Errorf("ipvsadm -Sn differs from Render(Snapshot):\n--- ipvsadm\n%s--- Render\n%s", out, got)
	}
	parsed, err := ipvs.ParseSave(out)
	if err != nil {
		t.Fatal(err)
	}
	if ipvs.Render(parsed) != got {
		t.Errorf("Render(ParseSave(ipvsadm -Sn)) differs:\n%s", ipvs.Render(parsed))
	}
}

func TestKernelVIPs(t *testing.T) {
	requireKernel(t)
	n := newTestNS(t)
	const name = "ipvs-op0"
	v, err := ipvs.NewDummyVIPsInNamespace(name, n.path)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // idempotent
		if err := v.EnsureInterface(); err != nil {
			t.Fatalf("EnsureInterface: %v", err)
		}
	}
	link, err := n.h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	if link.Type() != "dummy" || link.Attrs().RawFlags&unix.IFF_UP == 0 || link.Attrs().RawFlags&unix.IFF_NOARP == 0 {
		t.Errorf("link %s type %s flags %#x: want an UP, NOARP dummy", name, link.Type(), link.Attrs().RawFlags)
	}
	a4, a6 := netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("fd00::10")
	for _, a := range []netip.Addr{a4, a6, a4} {
		if err := v.Bind(a); err != nil {
			t.Fatalf("Bind(%s): %v", a, err)
		}
	}
	if got, err := v.List(); err != nil || !slices.Equal(got, []netip.Addr{a4, a6}) {
		t.Errorf("List() = %v, %v", got, err)
	}
	// The VIP is local at once (no DAD for IPv6): a socket can bind to it.
	for _, a := range []netip.Addr{a4, a6} {
		if err := n.do(func() error { return bindUDP(a) }); err != nil {
			t.Errorf("bind a socket to %s: %v", a, err)
		}
	}
	for _, a := range []netip.Addr{a4, a4} {
		if err := v.Unbind(a); err != nil {
			t.Fatalf("Unbind(%s): %v", a, err)
		}
	}
	if got, _ := v.List(); !slices.Equal(got, []netip.Addr{a6}) {
		t.Errorf("List() after Unbind = %v", got)
	}
	if up, err := v.InterfaceUp(); !up || err != nil {
		t.Errorf("InterfaceUp() = %v, %v; want true", up, err)
	}
	if err := n.h.LinkSetDown(link); err != nil { // `ip link set NAME down`: the VIPs lose their local routes
		t.Fatal(err)
	}
	if up, err := v.InterfaceUp(); up || err != nil {
		t.Errorf("InterfaceUp() after ip link set down = %v, %v; want false", up, err)
	}
	if err := v.EnsureInterface(); err != nil {
		t.Fatal(err)
	}
	if up, err := v.InterfaceUp(); !up || err != nil {
		t.Errorf("InterfaceUp() after EnsureInterface = %v, %v; want true", up, err)
	}
	if err := v.DeleteInterface(); err != nil {
		t.Fatal(err)
	}
	if _, err := n.h.LinkByName(name); err == nil {
		t.Error("interface still there after DeleteInterface")
	}
	if up, err := v.InterfaceUp(); up || err != nil {
		t.Errorf("InterfaceUp() after DeleteInterface = %v, %v; want false", up, err)
	}
}

func bindUDP(a netip.Addr) error {
	family, sa := unix.AF_INET6, unix.Sockaddr(&unix.SockaddrInet6{Addr: a.As16()})
	if a.Is4() {
		family, sa = unix.AF_INET, &unix.SockaddrInet4{Addr: a.As4()}
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Bind(fd, sa)
}

func TestKernelRules(t *testing.T) {
	requireKernel(t)
	n := newTestNS(t)
	tb, err := nftrules.New(nftrules.WithNetNS(int(n.ns)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tb.Close() })
	cidrs := []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd00:10:244::/56")}
	if err := tb.Ensure(cidrs); err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	el := ipvs.RuleElements{
		ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.0.1"), netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("fd00::10")},
		Endpoints:  []netip.Addr{netip.MustParseAddr("10.244.1.2"), netip.MustParseAddr("fd00:10:244::2")},
	}
	if err := tb.Update(el, ipvs.RuleElements{ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.9.9")}}); err != nil {
		t.Fatalf("Update: %v", err)
	}
	if err := tb.Ensure(cidrs); err != nil { // idempotent, keeps elements
		t.Fatalf("second Ensure: %v", err)
	}
	got, err := tb.Elements()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, el) {
		t.Errorf("Elements() = %v, want %v", got, el)
	}
	if _, err := exec.LookPath("nft"); err == nil {
		out, err := n.run("nft", "list", "table", "inet", nftrules.TableName)
		if err != nil {
			t.Fatalf("nft list table: %v\n%s", err, out)
		}
		if want := nftrules.Render(cidrs, el); out != want {
			t.Errorf("nft list table differs from Render:\n--- nft\n%s--- Render\n%s", out, want)
		}
	}
	if err := tb.Delete(); err != nil {
		t.Fatal(err)
	}
	if err := tb.Delete(); err != nil {
		t.Errorf("second Delete: %v", err)
	}
}

func TestKernelSysctls(t *testing.T) {
	requireKernel(t)
	n := newTestNS(t)
	var changed []string
	if err := n.do(func() error {
		var err error
		changed, err = host.ApplySysctls()
		return err
	}); err != nil {
		t.Fatalf("ApplySysctls in a fresh namespace: %v", err)
	}
	t.Logf("changed: %v", changed)
	err := n.do(func() error {
		for _, s := range host.Settings {
			b, err := os.ReadFile(filepath.Join("/proc/sys", strings.ReplaceAll(s.Name, ".", "/")))
			if err != nil {
				return err
			}
			if got := strings.TrimSpace(string(b)); got != s.Value {
				t.Errorf("%s = %s, want %s", s.Name, got, s.Value)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestKernelConnectionCounts checks that Destinations reports the kernel's connection counts, which the
// drain logic waits on. The real server is a local address, so IPVS delivers locally (no port change):
// the listener is on the virtual server's port.
func TestKernelConnectionCounts(t *testing.T) {
	n, i := kernelIPVS(t)
	v, err := ipvs.NewDummyVIPsInNamespace("ipvs-op0", n.path)
	if err != nil {
		t.Fatal(err)
	}
	vip, rs := netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("10.244.0.5")
	if err := v.EnsureInterface(); err != nil {
		t.Fatal(err)
	}
	for _, a := range []netip.Addr{vip, rs} {
		if err := v.Bind(a); err != nil {
			t.Fatal(err)
		}
	}
	var ln net.Listener
	if err := n.do(func() (err error) { ln, err = net.Listen("tcp4", "0.0.0.0:80"); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepted := make(chan net.Conn, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			accepted <- c
		}
	}()
	k := ipvs.ServiceKey{Address: vip, Port: 80, Protocol: ipvs.TCP}
	if err := i.AddService(ipvs.Service{ServiceKey: k, Scheduler: "rr"}); err != nil {
		t.Fatal(err)
	}
	if err := i.AddDestination(k, ipvs.Destination{DestinationKey: ipvs.DestinationKey{Address: rs, Port: 80}, Weight: 1}); err != nil {
		t.Fatal(err)
	}
	var c net.Conn
	if err := n.do(func() (err error) { c, err = net.DialTimeout("tcp4", "10.96.0.10:80", 5*time.Second); return err }); err != nil {
		t.Fatalf("connect through IPVS: %v", err)
	}
	defer c.Close()
	select {
	case sc := <-accepted:
		defer sc.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("the real server never accepted")
	}
	waitFor := func(what string, ok func(ipvs.DestinationStats) bool) {
		t.Helper()
		var last []ipvs.ObservedDestination
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			d, err := i.Destinations(k)
			if err != nil {
				t.Fatal(err)
			}
			if last = d; len(d) == 1 && ok(d[0].DestinationStats) {
				return
			}
		}
		t.Fatalf("%s: Destinations() = %+v", what, last)
	}
	waitFor("one active connection", func(s ipvs.DestinationStats) bool { return s.ActiveConnections == 1 })
	c.Close()
	waitFor("no active connection after close", func(s ipvs.DestinationStats) bool { return s.ActiveConnections == 0 })
}

// TestKernelAllDestinations: the one-read dump of every real server (/proc/net/ip_vs) agrees with the
// per-virtual-server netlink reads, for IPv4 and IPv6, weights and empty virtual servers, and it reads the
// handle's own network namespace, not the process's (the process's has other virtual servers).
func TestKernelAllDestinations(t *testing.T) {
	_, i := kernelIPVS(t)
	d, ok := i.(ipvs.DestinationDumper)
	if !ok {
		t.Fatal("the netlink Interface is not a DestinationDumper")
	}
	_, o := kernelIPVS(t)
	if err := o.AddService(ipvs.Service{ServiceKey: key("10.96.9.9:80", ipvs.TCP), Scheduler: "rr"}); err != nil {
		t.Fatal(err)
	}
	services := []struct {
		k     ipvs.ServiceKey
		dests []ipvs.Destination
	}{
		{key("10.96.0.10:80", ipvs.TCP), []ipvs.Destination{dst("10.244.1.5:8080", 1), dst("10.244.1.6:8080", 0), dst("10.244.1.7:8080", 3)}},
		{key("10.96.0.10:53", ipvs.UDP), []ipvs.Destination{dst("10.244.1.5:53", 1)}},
		{key("10.96.0.11:80", ipvs.TCP), nil},
		{key("[fd00::10]:443", ipvs.TCP), []ipvs.Destination{dst("[fd00:244::5]:8443", 2)}},
	}
	for _, s := range services {
		if err := i.AddService(ipvs.Service{ServiceKey: s.k, Scheduler: "rr"}); err != nil {
			t.Fatal(err)
		}
		for _, dd := range s.dests {
			if err := i.AddDestination(s.k, dd); err != nil {
				t.Fatal(err)
			}
		}
	}
	all, err := d.AllDestinations()
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != len(services) {
		t.Errorf("AllDestinations has %d virtual servers, want %d (this namespace's only): %v", len(all), len(services), all)
	}
	byKey := func(a, b ipvs.ObservedDestination) int {
		return a.DestinationKey.Address.Compare(b.DestinationKey.Address)
	}
	for _, s := range services {
		want, err := i.Destinations(s.k)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := all[s.k]
		slices.SortFunc(got, byKey)
		slices.SortFunc(want, byKey)
		if !ok || len(got) != len(want) || (len(want) > 0 && !reflect.DeepEqual(got, want)) {
			t.Errorf("%s: AllDestinations %v (present %v), Destinations %v", s.k, got, ok, want)
		}
	}
	// Read again: the file is re-read from its start.
	if again, err := d.AllDestinations(); err != nil || len(again) != len(services) {
		t.Errorf("second AllDestinations: %d virtual servers, %v", len(again), err)
	}
}

// TestKernelBindAll: BindAll binds many addresses in batches (here three, the last one ending in an invalid
// address) with the outcome of each, as Bind would: bound, already bound (not an error), or refused; List,
// which parses the dump in place, reads them all back; IPv6 ones are usable at once (no DAD).
func TestKernelBindAll(t *testing.T) {
	requireKernel(t)
	n := newTestNS(t)
	v, err := ipvs.NewDummyVIPsInNamespace("ipvs-op0", n.path)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.EnsureInterface(); err != nil {
		t.Fatal(err)
	}
	b, ok := v.(ipvs.VIPBatcher)
	if !ok {
		t.Fatal("the dummy VIPs do not batch binds")
	}
	want := make([]netip.Addr, 0, 601)
	for i := range 600 {
		want = append(want, netip.AddrFrom4([4]byte{10, 96, byte(i / 250), byte(i%250 + 1)}))
	}
	a6 := netip.MustParseAddr("fd00::10")
	want = append(want, a6)
	if err := v.Bind(want[5]); err != nil { // already bound: not an error
		t.Fatal(err)
	}
	invalid := netip.MustParseAddr("::ffff:10.1.1.1")
	addrs := append(slices.Clone(want), invalid)
	errs := b.BindAll(addrs)
	if len(errs) != len(addrs) {
		t.Fatalf("%d outcomes for %d addresses", len(errs), len(addrs))
	}
	for i, err := range errs {
		if wantErr := addrs[i] == invalid; (err != nil) != wantErr {
			t.Errorf("BindAll: %s: %v", addrs[i], err)
		}
	}
	if !errors.Is(errs[len(errs)-1], unix.EINVAL) {
		t.Errorf("BindAll of a v4-mapped address: %v, want EINVAL", errs[len(errs)-1])
	}
	got, err := v.List()
	slices.SortFunc(want, netip.Addr.Compare)
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("List() after BindAll: %d addresses (%v), want %d", len(got), err, len(want))
	}
	if err := n.do(func() error { return bindUDP(a6) }); err != nil {
		t.Errorf("bind a socket to %s: %v", a6, err)
	}
	for i, err := range b.BindAll(want) { // every one bound already
		if err != nil {
			t.Errorf("second BindAll: %s: %v", want[i], err)
		}
	}
	if err := v.DeleteInterface(); err != nil {
		t.Fatal(err)
	}
	for i, err := range b.BindAll(want[:3]) {
		if !errors.Is(err, unix.ENODEV) {
			t.Errorf("BindAll without the interface: %s: %v, want ENODEV", want[i], err)
		}
	}
}

// TestKernelBatch: Batch leaves the kernel exactly as the same AddService and AddDestination calls made one
// by one do (IPv4 and IPv6, persistence, weights, several messages of batchSize), and reports each
// addition's own error: an existing virtual server (ErrExists), a real server of a missing one
// (ErrNotFound), a missing scheduler (ErrSchedulerNotFound), the last of a message included.
func TestKernelBatch(t *testing.T) {
	_, batched := kernelIPVS(t)
	_, single := kernelIPVS(t)
	b, ok := batched.(ipvs.Batcher)
	if !ok {
		t.Fatal("the netlink Interface does not batch")
	}
	adds := make([]ipvs.Addition, 0, 602)
	for i := range 150 {
		svc := ipvs.Service{ServiceKey: key(fmt.Sprintf("10.96.%d.%d:80", i/250, i%250+1), ipvs.TCP), Scheduler: "rr"}
		if i%7 == 0 {
			svc.Persistence = 3 * time.Hour
		}
		adds = append(adds, ipvs.Addition{Op: ipvs.OpAddService, Service: svc})
		for j := range 3 {
			d := ipvs.Destination{DestinationKey: ipvs.DestinationKey{Address: netip.AddrFrom4([4]byte{10, 244, byte(i), byte(j + 1)}), Port: 8080}, Weight: j + 1}
			adds = append(adds, ipvs.Addition{Op: ipvs.OpAddDestination, Service: svc, Destination: d})
		}
	}
	v6 := ipvs.Service{ServiceKey: key("[fd00::10]:53", ipvs.UDP), Scheduler: "lc", Persistence: 10 * time.Second}
	adds = append(adds,
		ipvs.Addition{Op: ipvs.OpAddService, Service: v6},
		ipvs.Addition{Op: ipvs.OpAddDestination, Service: v6, Destination: ipvs.Destination{DestinationKey: ipvs.DestinationKey{Address: netip.MustParseAddr("fd00:10:244::5"), Port: 53}, Weight: 2}},
	)
	type failure struct {
		add ipvs.Addition
		err error
	}
	failures := []failure{
		{ipvs.Addition{Op: ipvs.OpAddService, Service: adds[0].Service}, ipvs.ErrExists},
		{ipvs.Addition{Op: ipvs.OpAddDestination, Service: ipvs.Service{ServiceKey: key("10.96.99.99:80", ipvs.TCP)},
			Destination: ipvs.Destination{DestinationKey: ipvs.DestinationKey{Address: netip.MustParseAddr("10.244.99.1"), Port: 80}, Weight: 1}}, ipvs.ErrNotFound},
		{ipvs.Addition{Op: ipvs.OpAddService, Service: ipvs.Service{ServiceKey: key("10.96.99.98:80", ipvs.TCP), Scheduler: "nosuch"}}, ipvs.ErrSchedulerNotFound},
	}
	// The failures sit in the middle of a message and at the end of one (and of the whole batch).
	all := slices.Concat(adds[:200], []ipvs.Addition{failures[0].add, failures[1].add}, adds[200:], []ipvs.Addition{failures[2].add})
	errs := b.Batch(all)
	if len(errs) != len(all) {
		t.Fatalf("%d outcomes for %d additions", len(errs), len(all))
	}
	for i, a := range all {
		want := error(nil)
		for _, f := range failures {
			if reflect.DeepEqual(a, f.add) && (i == 200 || i == 201 || i == len(all)-1) {
				want = f.err
			}
		}
		if (want == nil && errs[i] != nil) || (want != nil && !errors.Is(errs[i], want)) {
			t.Errorf("addition %d (%s %s): %v, want %v", i, a.Op, a.Service.ServiceKey, errs[i], want)
		}
	}
	for _, a := range adds {
		var err error
		if a.Op == ipvs.OpAddService {
			err = single.AddService(a.Service)
		} else {
			err = single.AddDestination(a.Service.ServiceKey, a.Destination)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	state := func(i ipvs.Interface) string {
		t.Helper()
		vs, err := ipvs.Snapshot(i)
		if err != nil {
			t.Fatal(err)
		}
		return ipvs.Render(vs)
	}
	if got, want := state(batched), state(single); got != want {
		t.Errorf("kernel after Batch differs from one call per addition:\n--- Batch\n%s--- one by one\n%s", got, want)
	}
}
