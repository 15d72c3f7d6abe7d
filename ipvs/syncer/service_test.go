package syncer

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
	"github.com/ipvs-operator/ipvs-operator/ipvs/fake"
	"github.com/ipvs-operator/ipvs-operator/ipvs/plan"
)

const drain = 30 * time.Second

// web is a dual-stack, multi-port Service: TCP 80 and UDP 53 on both families.
func web(v4Dests, v6Dests []string) plan.Desired {
	return service(drain,
		tcp("10.96.0.10:80", withPort(v4Dests, 8080)...),
		udp("10.96.0.10:53", withPort(v4Dests, 5353)...),
		tcp("[fd00::10]:80", withPort(v6Dests, 8080)...),
		udp("[fd00::10]:53", withPort(v6Dests, 5353)...),
	)
}

func withPort(ips []string, port int) []string {
	out := make([]string, len(ips))
	for i, ip := range ips {
		out[i] = netip.AddrPortFrom(netip.MustParseAddr(ip), uint16(port)).String()
	}
	return out
}

func TestSyncServiceCreatesAndIsIdempotent(t *testing.T) {
	h := newHarness(t)
	h.kernelOps()
	res := h.sync("ns/web", web([]string{"10.244.2.5", "10.244.1.5"}, []string{"fd00:244::5"}))
	if want := 2 + 4 + 6; res.Ops != want { // 2 VIPs, 4 virtual servers, 6 real servers
		t.Errorf("Ops = %d, want %d", res.Ops, want)
	}
	if res.RequeueAfter != 0 {
		t.Errorf("RequeueAfter = %v, want 0", res.RequeueAfter)
	}
	if ops := h.kernelOps(); ops[fake.Services] != 0 || ops[fake.Destinations] != 0 || ops[fake.List] != 0 {
		t.Errorf("a new Service read the kernel: %v", ops)
	}
	h.golden("create-dual-stack")

	res = h.sync("ns/web", web([]string{"10.244.1.5", "10.244.2.5"}, []string{"fd00:244::5"}))
	if ops := h.kernelOps(); res.Ops != 0 || len(ops) != 0 {
		t.Errorf("unchanged Service: Ops = %d, kernel calls %v; want none", res.Ops, ops)
	}
	if got, want := h.metrics.gauges(), [3]int{4, 6, 0}; got != want {
		t.Errorf("gauges (servers, active, draining) = %v, want %v", got, want)
	}
}

func TestSyncServiceUDPRealServerDeletedAtOnce(t *testing.T) {
	h := newHarness(t)
	h.sync("ns/dns", service(drain, udp("10.96.0.53:53", "10.244.1.5:53", "10.244.2.5:53")))
	if err := h.ipvs.SetConnections(skey(ipvs.UDP, "10.96.0.53:53"), dkey("10.244.1.5:53"), 0, 7); err != nil {
		t.Fatal(err)
	}
	h.kernelOps()
	res := h.sync("ns/dns", service(drain, udp("10.96.0.53:53", "10.244.2.5:53")))
	ops := h.kernelOps()
	if ops[fake.DeleteDestination] != 1 || ops[fake.UpdateDestination] != 0 || ops[fake.Destinations] != 0 {
		t.Errorf("kernel calls %v; want one DeleteDestination and no read", ops)
	}
	if res.RequeueAfter != 0 {
		t.Errorf("RequeueAfter = %v, want 0: nothing drains", res.RequeueAfter)
	}
	h.golden("udp-delete-at-once")
}

func TestSyncServiceTCPDrain(t *testing.T) {
	key, http := "ns/web", skey(ipvs.TCP, "10.96.0.10:80")
	both := service(drain, tcp("10.96.0.10:80", "10.244.1.5:8080", "10.244.2.5:8080"))
	one := service(drain, tcp("10.96.0.10:80", "10.244.2.5:8080"))

	t.Run("weight 0, then deleted when its connections end", func(t *testing.T) {
		h := newHarness(t)
		h.sync(key, both)
		if err := h.ipvs.SetConnections(http, dkey("10.244.1.5:8080"), 3, 1); err != nil {
			t.Fatal(err)
		}
		h.kernelOps()
		res := h.sync(key, one)
		if ops := h.kernelOps(); ops[fake.UpdateDestination] != 1 || ops[fake.Destinations] != 1 || len(ops) != 2 {
			t.Errorf("kernel calls %v; want one read of the virtual server and one UpdateDestination", ops)
		}
		if res.RequeueAfter != DefaultDrainPollInterval {
			t.Errorf("RequeueAfter = %v, want the poll interval %v", res.RequeueAfter, DefaultDrainPollInterval)
		}
		h.golden("tcp-drain-weight-0")
		if got, want := h.metrics.gauges(), [3]int{1, 1, 1}; got != want {
			t.Errorf("gauges (servers, active, draining) = %v, want %v", got, want)
		}

		h.clock.SetTime(t0.Add(10 * time.Second))
		res = h.sync(key, one)
		if res.Ops != 0 || res.RequeueAfter != DefaultDrainPollInterval {
			t.Errorf("still draining: Ops %d RequeueAfter %v; want 0, %v", res.Ops, res.RequeueAfter, DefaultDrainPollInterval)
		}

		h.clock.SetTime(t0.Add(27 * time.Second))
		res = h.sync(key, one)
		if res.RequeueAfter != 3*time.Second {
			t.Errorf("RequeueAfter = %v, want the 3s left to the deadline", res.RequeueAfter)
		}

		if err := h.ipvs.SetConnections(http, dkey("10.244.1.5:8080"), 0, 0); err != nil {
			t.Fatal(err)
		}
		res = h.sync(key, one)
		if res.Ops != 1 || res.RequeueAfter != 0 {
			t.Errorf("connections ended: Ops %d RequeueAfter %v; want 1 delete, no requeue", res.Ops, res.RequeueAfter)
		}
		h.golden("tcp-drain-deleted")
	})

	t.Run("deleted at the deadline despite connections", func(t *testing.T) {
		h := newHarness(t)
		h.sync(key, both)
		if err := h.ipvs.SetConnections(http, dkey("10.244.1.5:8080"), 5, 0); err != nil {
			t.Fatal(err)
		}
		h.sync(key, one)
		h.clock.SetTime(t0.Add(drain - time.Nanosecond))
		if res := h.sync(key, one); res.Ops != 0 {
			t.Errorf("before the deadline: Ops = %d, want 0", res.Ops)
		}
		h.clock.SetTime(t0.Add(drain))
		if res := h.sync(key, one); res.Ops != 1 || res.RequeueAfter != 0 {
			t.Errorf("at the deadline: %+v, want one delete and no requeue", res)
		}
		h.golden("tcp-drain-deleted")
	})

	t.Run("timeout 0 deletes at once", func(t *testing.T) {
		h := newHarness(t)
		h.sync(key, both)
		if err := h.ipvs.SetConnections(http, dkey("10.244.1.5:8080"), 5, 0); err != nil {
			t.Fatal(err)
		}
		h.kernelOps()
		now := service(0, tcp("10.96.0.10:80", "10.244.2.5:8080"))
		if res := h.sync(key, now); res.Ops != 1 || res.RequeueAfter != 0 {
			t.Errorf("%+v, want one delete", res)
		}
		if ops := h.kernelOps(); ops[fake.DeleteDestination] != 1 || ops[fake.Destinations] != 0 {
			t.Errorf("kernel calls %v, want one DeleteDestination and no read", ops)
		}
	})

	t.Run("a TCP real server without connections is deleted at once", func(t *testing.T) {
		h := newHarness(t)
		h.sync(key, both)
		if res := h.sync(key, one); res.Ops != 1 || res.RequeueAfter != 0 {
			t.Errorf("%+v, want one delete", res)
		}
		h.golden("tcp-drain-deleted")
	})

	t.Run("an endpoint back while draining gets its weight back", func(t *testing.T) {
		h := newHarness(t)
		h.sync(key, both)
		if err := h.ipvs.SetConnections(http, dkey("10.244.1.5:8080"), 5, 0); err != nil {
			t.Fatal(err)
		}
		h.sync(key, one)
		h.clock.SetTime(t0.Add(5 * time.Second))
		h.kernelOps()
		res := h.sync(key, both)
		if ops := h.kernelOps(); res.Ops != 1 || ops[fake.UpdateDestination] != 1 || res.RequeueAfter != 0 {
			t.Errorf("Result %+v, kernel calls %v; want one UpdateDestination", res, ops)
		}
		h.golden("tcp-drain-restored")
		// A later drain of the same real server starts a new deadline.
		h.clock.SetTime(t0.Add(60 * time.Second))
		h.sync(key, one)
		h.clock.SetTime(t0.Add(60*time.Second + drain - time.Second))
		if res := h.sync(key, one); res.Ops != 0 {
			t.Errorf("second drain cut short: %+v", res)
		}
	})
}

func TestSyncServiceSchedulerAndPersistenceChangeInPlace(t *testing.T) {
	h := newHarness(t)
	h.sync("ns/web", service(drain, tcp("10.96.0.10:80", "10.244.1.5:8080")))
	h.kernelOps()
	lc := vs(ipvs.TCP, "10.96.0.10:80", "lc", "10.244.1.5:8080")
	lc.Persistence = 3 * time.Hour
	h.sync("ns/web", service(drain, lc))
	if ops := h.kernelOps(); ops[fake.UpdateService] != 1 || len(ops) != 1 {
		t.Errorf("kernel calls %v, want exactly one UpdateService", ops)
	}
	h.golden("scheduler-change")
}

func TestSyncServicePortRemovedAndServiceDeleted(t *testing.T) {
	h := newHarness(t)
	h.sync("ns/web", web([]string{"10.244.1.5"}, []string{"fd00:244::5"}))
	h.sync("ns/other", service(drain, tcp("10.96.0.20:80", "10.244.1.5:8080", "10.244.1.6:8080")))

	h.kernelOps()
	h.sync("ns/web", service(drain, tcp("10.96.0.10:80", "10.244.1.5:8080")))
	if ops := h.kernelOps(); ops[fake.DeleteService] != 3 || ops[fake.Unbind] != 1 || ops[fake.DeleteDestination] != 0 {
		t.Errorf("kernel calls %v, want 3 DeleteService and 1 Unbind (the IPv6 VIP), no real-server deletes", ops)
	}
	h.golden("port-removed")

	res := h.sync("ns/web", plan.Desired{})
	if res.Ops != 2 {
		t.Errorf("deleting the Service: Ops = %d, want 2 (delete, unbind)", res.Ops)
	}
	// 10.244.1.5 is still an endpoint of ns/other: it stays in the nftables set.
	h.golden("service-deleted")
	h.s.mu.Lock()
	_, kept := h.s.entries["ns/web"]
	h.s.mu.Unlock()
	if kept {
		t.Error("a deleted Service's entry is still cached")
	}
}

func TestSyncServiceErrorInOneServiceDoesNotAffectAnother(t *testing.T) {
	h := newHarness(t)
	broken := &failingIPVS{Interface: h.ipvs, vip: addr("10.96.0.10"), err: unix.ENOMEM}
	h.s = New(broken, h.vips, h.rules, h.clock, Options{})
	if err := h.s.Adopt(h.ctx); err != nil {
		t.Fatal(err)
	}
	h.sync("ns/b", service(drain, tcp("10.96.0.20:80", "10.244.2.5:8080")))

	bad := service(drain, tcp("10.96.0.10:80", "10.244.1.5:8080"))
	_, err := h.s.SyncService(h.ctx, "ns/a", bad)
	var opErr *OpError
	if !errors.Is(err, unix.ENOMEM) || !errors.As(err, &opErr) || opErr.Op.Kind != plan.AddService {
		t.Fatalf("err = %v, want an AddService OpError wrapping ENOMEM", err)
	}
	// ns/b is intact and still in sync, and changes go through.
	if res := h.sync("ns/b", service(drain, tcp("10.96.0.20:80", "10.244.2.5:8080"))); res.Ops != 0 {
		t.Errorf("ns/b resynced with %d ops after ns/a failed", res.Ops)
	}
	h.sync("ns/b", service(drain, tcp("10.96.0.20:80", "10.244.2.5:8080", "10.244.2.6:8080")))

	// Once the kernel accepts it, ns/a converges, re-reading only its own virtual servers.
	broken.err = nil
	h.kernelOps()
	h.sync("ns/a", bad)
	if ops := h.kernelOps(); ops[fake.Services] != 0 || ops[fake.Destinations] != 1 || ops[fake.List] != 0 {
		t.Errorf("retry read %v; want only its one virtual server", ops)
	}
	h.golden("one-service-failed-other-fine")
}

func TestSyncServiceFailedAddKeepsOldRealServers(t *testing.T) {
	h := newHarness(t)
	key := "ns/web"
	h.sync(key, service(drain, tcp("10.96.0.10:80", "10.244.1.5:8080")))
	h.ipvs.SetError(fake.AddDestination, unix.ENOMEM)
	_, err := h.s.SyncService(h.ctx, key, service(drain, tcp("10.96.0.10:80", "10.244.3.5:8080")))
	if !errors.Is(err, unix.ENOMEM) {
		t.Fatalf("err = %v, want ENOMEM", err)
	}
	h.ipvs.SetError(fake.AddDestination, nil)
	// The old real server still takes traffic: a failed add never empties a virtual server.
	h.golden("failed-add-keeps-old")
	h.sync(key, service(drain, tcp("10.96.0.10:80", "10.244.3.5:8080")))
	h.golden("failed-add-then-replaced")
}

func TestSyncServiceConflictingVIP(t *testing.T) {
	h := newHarness(t)
	h.sync("ns/old", service(drain, tcp("10.96.0.10:80", "10.244.1.5:8080")))
	_, err := h.s.SyncService(h.ctx, "ns/new", service(drain, tcp("10.96.0.10:443", "10.244.9.5:8443"), tcp("[fd00::10]:443", "[fd00:244::9]:8443")))
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("err = %v, want ErrConflict", err)
	}
	// The other family was programmed; the owner's virtual server is untouched.
	h.golden("conflict")
	h.sync("ns/old", plan.Desired{})
	h.sync("ns/new", service(drain, tcp("10.96.0.10:443", "10.244.9.5:8443"), tcp("[fd00::10]:443", "[fd00:244::9]:8443")))
	h.golden("conflict-resolved")
}

func TestSyncServiceRefusesBeforeAdoptAndInvalidInput(t *testing.T) {
	s := New(fake.New(), fake.NewVIPs(), nil, clocktesting.NewFakePassiveClock(t0), Options{})
	if _, err := s.SyncService(context.Background(), "ns/a", plan.Desired{}); !errors.Is(err, ErrNotAdopted) {
		t.Errorf("before Adopt: err = %v, want ErrNotAdopted", err)
	}
	if err := s.Adopt(context.Background()); err != nil {
		t.Fatal(err)
	}
	for name, d := range map[string]plan.Desired{
		"server off its VIPs":         {VIPs: []netip.Addr{addr("10.96.0.1")}, Servers: []ipvs.VirtualServer{tcp("10.96.0.2:80")}},
		"server listed twice":         service(drain, tcp("10.96.0.1:80"), tcp("10.96.0.1:80")),
		"real server of other family": service(drain, tcp("10.96.0.1:80", "[fd00::1]:80")),
		"VIP listed twice":            {VIPs: []netip.Addr{addr("10.96.0.1"), addr("10.96.0.1")}},
	} {
		if _, err := s.SyncService(context.Background(), "ns/a", d); !errors.Is(err, ErrInvalidDesired) {
			t.Errorf("%s: err = %v, want ErrInvalidDesired", name, err)
		}
	}
}

func TestSyncServiceOpsMetrics(t *testing.T) {
	h := newHarness(t)
	h.sync("ns/web", service(drain, tcp("10.96.0.10:80", "10.244.1.5:8080", "10.244.1.6:8080")))
	want := map[string]int{"bind_vip": 1, "add_service": 1, "add_destination": 2}
	if diff := cmp.Diff(want, h.metrics.ops); diff != "" {
		t.Errorf("ops metrics (-want +got):\n%s", diff)
	}
}

// callLog records the kernel calls in the order they are made.
type callLog struct {
	ipvs.Interface
	ipvs.VIPs
	calls []string
}

func (c *callLog) add(s string, err error) error { c.calls = append(c.calls, s); return err }
func (c *callLog) Bind(a netip.Addr) error       { return c.add("bind "+a.String(), c.VIPs.Bind(a)) }
func (c *callLog) Unbind(a netip.Addr) error     { return c.add("unbind "+a.String(), c.VIPs.Unbind(a)) }
func (c *callLog) AddService(s ipvs.Service) error {
	return c.add("add "+s.ServiceKey.String(), c.Interface.AddService(s))
}
func (c *callLog) DeleteService(k ipvs.ServiceKey) error {
	return c.add("delete "+k.String(), c.Interface.DeleteService(k))
}
func (c *callLog) AddDestination(k ipvs.ServiceKey, d ipvs.Destination) error {
	return c.add("add "+k.String()+" -r "+d.DestinationKey.String(), c.Interface.AddDestination(k, d))
}
func (c *callLog) UpdateDestination(k ipvs.ServiceKey, d ipvs.Destination) error {
	return c.add(fmt.Sprintf("weight %s -r %s %d", k, d.DestinationKey, d.Weight), c.Interface.UpdateDestination(k, d))
}
func (c *callLog) DeleteDestination(k ipvs.ServiceKey, d ipvs.DestinationKey) error {
	return c.add("delete "+k.String()+" -r "+d.String(), c.Interface.DeleteDestination(k, d))
}

func TestSyncServiceAppliesInSafeOrder(t *testing.T) {
	h := newHarness(t)
	log := &callLog{Interface: h.ipvs, VIPs: h.vips}
	h.s = New(log, log, h.rules, h.clock, Options{})
	if err := h.s.Adopt(h.ctx); err != nil {
		t.Fatal(err)
	}
	h.sync("ns/web", service(drain, tcp("10.96.0.10:80", "10.244.1.5:8080"), tcp("[fd00::10]:80", "[fd00:244::5]:8080")))
	if err := h.ipvs.SetConnections(skey(ipvs.TCP, "10.96.0.10:80"), dkey("10.244.1.5:8080"), 1, 0); err != nil {
		t.Fatal(err)
	}
	log.calls = nil
	h.sync("ns/web", service(drain, tcp("10.96.0.10:80", "10.244.2.5:8080"), tcp("10.96.0.11:80", "10.244.2.5:8080")))
	want := []string{
		"add -t 10.96.0.11:80",
		"add -t 10.96.0.10:80 -r 10.244.2.5:8080",
		"add -t 10.96.0.11:80 -r 10.244.2.5:8080",
		"weight -t 10.96.0.10:80 -r 10.244.1.5:8080 0",
		"delete -t [fd00::10]:80",
		"unbind fd00::10",
		"bind 10.96.0.11", // last: after the nftables sets opened its port
	}
	if diff := cmp.Diff(want, log.calls); diff != "" {
		t.Errorf("kernel calls (-want +got):\n%s", diff)
	}
}

func TestSetPodCIDRs(t *testing.T) {
	h := newHarness(t)
	if got := h.rules.PodCIDRs(); len(got) != 1 || got[0].String() != "10.244.0.0/16" {
		t.Errorf("after Adopt, pod CIDRs %v; want the Options' 10.244.0.0/16", got)
	}
	cidrs := []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24"), netip.MustParsePrefix("fd00:244:1::/64")}
	if err := h.s.SetPodCIDRs(h.ctx, cidrs); err != nil {
		t.Fatal(err)
	}
	if err := h.s.Audit(h.ctx); err != nil { // repairs with the new CIDRs, not the initial ones
		t.Fatal(err)
	}
	if diff := cmp.Diff(cidrs, h.rules.PodCIDRs(), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("pod CIDRs (-want +got):\n%s", diff)
	}
}
