package syncer

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
	"github.com/ipvs-operator/ipvs-operator/ipvs/fake"
	"github.com/ipvs-operator/ipvs-operator/ipvs/plan"
)

// addForeign makes a virtual server by hand on an address that is not the agent's, as an admin would.
func addForeign(t *testing.T, f *fake.IPVS) {
	t.Helper()
	k := skey(ipvs.TCP, "192.0.2.1:80")
	if err := f.AddService(ipvs.Service{ServiceKey: k, Scheduler: "wlc"}); err != nil {
		t.Fatal(err)
	}
	if err := f.AddDestination(k, ipvs.Destination{DestinationKey: dkey("192.0.2.100:80"), Weight: 0}); err != nil {
		t.Fatal(err)
	}
}

const foreignSave = "-A -t 192.0.2.1:80 -s wlc\n-a -t 192.0.2.1:80 -r 192.0.2.100:80 -m -w 0\n"

func TestAdoptAfterRestart(t *testing.T) {
	h := newHarness(t)
	webState := web([]string{"10.244.1.5", "10.244.2.5"}, []string{"fd00:244::5"})
	h.sync("ns/web", webState)
	if err := h.ipvs.SetConnections(skey(ipvs.TCP, "10.96.0.10:80"), dkey("10.244.2.5:8080"), 4, 0); err != nil {
		t.Fatal(err)
	}
	drained := service(drain, tcp("10.96.0.20:80", "10.244.1.7:8080"))
	h.sync("ns/drained", service(drain, tcp("10.96.0.20:80", "10.244.1.7:8080", "10.244.1.8:8080")))
	if err := h.ipvs.SetConnections(skey(ipvs.TCP, "10.96.0.20:80"), dkey("10.244.1.8:8080"), 4, 0); err != nil {
		t.Fatal(err)
	}
	h.sync("ns/drained", drained) // 10.244.1.8 drains at weight 0 from t0
	before := h.state()

	// A desired endpoint left at weight 0 by the previous agent (it crashed mid-drain, say).
	if err := h.ipvs.UpdateDestination(skey(ipvs.TCP, "10.96.0.10:80"), ipvs.Destination{DestinationKey: dkey("10.244.2.5:8080")}); err != nil {
		t.Fatal(err)
	}

	h.clock.SetTime(t0.Add(20 * time.Second))
	h.restart()
	h.kernelOps()
	res := h.sync("ns/web", webState)
	if ops := h.kernelOps(); res.Ops != 1 || ops[fake.UpdateDestination] != 1 || ops[fake.Services] != 0 {
		t.Errorf("adopted Service: Result %+v, kernel calls %v; want the one weight restored, no dump", res, ops)
	}
	// The drain the previous agent started counts from the adoption: never shorter than asked.
	res = h.sync("ns/drained", drained)
	if res.Ops != 0 || res.RequeueAfter != DefaultDrainPollInterval {
		t.Errorf("adopted drain: %+v, want no op and a poll", res)
	}
	if got := h.state(); got != before {
		t.Errorf("after restart the kernel differs:\n%s\nwant\n%s", got, before)
	}
	h.clock.SetTime(t0.Add(20*time.Second + drain))
	if res := h.sync("ns/drained", drained); res.Ops != 1 {
		t.Errorf("adopted drain past its deadline: Ops = %d, want 1 delete", res.Ops)
	}

	// Nothing was flushed, and a first audit after the full sync has nothing to repair.
	h.kernelOps()
	if err := h.s.Audit(h.ctx); err != nil {
		t.Fatal(err)
	}
	if n := h.metrics.ops; len(n) != 2 || n["update_destination"] != 1 || n["delete_destination"] != 1 {
		t.Errorf("ops since restart %v; want only the restore and the drain's end", n)
	}
}

func TestForeignServiceIsNeverTouched(t *testing.T) {
	h := newHarness(t)
	addForeign(t, h.ipvs)
	h.restart()
	h.sync("ns/web", service(drain, tcp("10.96.0.10:80", "10.244.1.5:8080")))
	if err := h.s.Audit(h.ctx); err != nil {
		t.Fatal(err)
	}
	h.golden("foreign-kept")
	h.kernelOps()
	if err := h.s.Cleanup(h.ctx); err != nil {
		t.Fatal(err)
	}
	ops := h.ipvs.Ops()
	if ops[fake.DeleteService] != 1 || ops[fake.Destinations] != 1 {
		t.Errorf("Cleanup calls %v; want one read and one delete (ours), the foreign one not even read", ops)
	}
	vs, err := ipvs.Snapshot(h.ipvs)
	if err != nil {
		t.Fatal(err)
	}
	if got := ipvs.Render(vs); got != foreignSave {
		t.Errorf("after Cleanup the table is\n%s\nwant only the foreign virtual server\n%s", got, foreignSave)
	}
	if h.vips.InterfaceExists() || h.rules.TableExists() {
		t.Error("Cleanup left the dummy interface or the nftables table")
	}
}

func TestAuditRepairsDrift(t *testing.T) {
	h := newHarness(t)
	addForeign(t, h.ipvs)
	h.sync("ns/web", web([]string{"10.244.1.5", "10.244.2.5"}, []string{"fd00:244::5"}))
	h.sync("ns/db", service(drain, tcp("10.96.0.30:5432", "10.244.3.5:5432")))
	want := h.state()

	// ipvsadm -C (after which the admin re-creates his own virtual server), a VIP deleted and an nftables
	// element removed, all behind our back.
	vs, _ := ipvs.Snapshot(h.ipvs)
	for _, v := range vs {
		if err := h.ipvs.DeleteService(v.ServiceKey); err != nil {
			t.Fatal(err)
		}
	}
	addForeign(t, h.ipvs)
	if err := h.vips.Unbind(addr("fd00::10")); err != nil {
		t.Fatal(err)
	}
	if err := h.rules.Update(ipvs.RuleElements{}, ipvs.RuleElements{Endpoints: []netip.Addr{addr("10.244.3.5")}}); err != nil {
		t.Fatal(err)
	}
	if err := h.s.Audit(h.ctx); err != nil {
		t.Fatal(err)
	}
	if got := h.state(); got != want {
		t.Errorf("after Audit:\n%s\nwant\n%s", got, want)
	}
	// The cache is right again: a sync with the same state does nothing.
	if res := h.sync("ns/web", web([]string{"10.244.1.5", "10.244.2.5"}, []string{"fd00:244::5"})); res.Ops != 0 {
		t.Errorf("after Audit, sync made %d ops", res.Ops)
	}

	// Someone changes a weight and deletes the dummy interface itself.
	if err := h.ipvs.UpdateDestination(skey(ipvs.TCP, "10.96.0.30:5432"), ipvs.Destination{DestinationKey: dkey("10.244.3.5:5432"), Weight: 0}); err != nil {
		t.Fatal(err)
	}
	if err := h.vips.DeleteInterface(); err != nil {
		t.Fatal(err)
	}
	if err := h.s.Audit(h.ctx); err != nil {
		t.Fatal(err)
	}
	if got := h.state(); got != want {
		t.Errorf("after the second Audit:\n%s\nwant\n%s", got, want)
	}
}

func TestAuditSweepsWhatNoServiceClaims(t *testing.T) {
	h := newHarness(t)
	h.sync("ns/web", service(drain, tcp("10.96.0.10:80", "10.244.1.5:8080")))
	h.sync("ns/gone", service(drain, tcp("10.96.0.99:80", "10.244.9.9:8080"), tcp("10.96.0.99:81")))
	h.sync("ns/web-moved", service(drain, tcp("10.96.0.50:80", "10.244.1.5:8080"), tcp("10.96.0.50:443")))
	// The agent restarts; meanwhile ns/gone was deleted and ns/web-moved lost a port.
	h.restart()
	h.sync("ns/web", service(drain, tcp("10.96.0.10:80", "10.244.1.5:8080")))
	h.sync("ns/web-moved", service(drain, tcp("10.96.0.50:80", "10.244.1.5:8080")))
	if err := h.s.Audit(h.ctx); err != nil {
		t.Fatal(err)
	}
	h.golden("audit-swept")
	if got, want := h.metrics.gauges(), [3]int{2, 2, 0}; got != want {
		t.Errorf("gauges (servers, active, draining) = %v, want %v", got, want)
	}
}

func TestAuditErrorsStayPerService(t *testing.T) {
	h := newHarness(t)
	broken := &failingIPVS{Interface: h.ipvs, vip: addr("10.96.0.10")}
	h.s = New(broken, h.vips, h.rules, h.clock, Options{})
	if err := h.s.Adopt(h.ctx); err != nil {
		t.Fatal(err)
	}
	h.sync("ns/a", service(drain, tcp("10.96.0.10:80", "10.244.1.5:8080")))
	h.sync("ns/b", service(drain, tcp("10.96.0.20:80", "10.244.2.5:8080")))
	for _, k := range []ipvs.ServiceKey{skey(ipvs.TCP, "10.96.0.10:80"), skey(ipvs.TCP, "10.96.0.20:80")} {
		if err := h.ipvs.DeleteService(k); err != nil {
			t.Fatal(err)
		}
	}
	broken.err = unix.ENOMEM
	err := h.s.Audit(h.ctx)
	if !errors.Is(err, unix.ENOMEM) || !strings.Contains(err.Error(), "ns/a") {
		t.Fatalf("Audit err = %v, want ns/a's ENOMEM", err)
	}
	vs, _ := ipvs.Snapshot(h.ipvs)
	if got, want := ipvs.Render(vs), "-A -t 10.96.0.20:80 -s rr\n-a -t 10.96.0.20:80 -r 10.244.2.5:8080 -m -w 1\n"; got != want {
		t.Errorf("ns/b not repaired:\n%s\nwant\n%s", got, want)
	}
}

func TestCleanupWithoutAdopt(t *testing.T) {
	h := newHarness(t)
	h.sync("ns/web", web([]string{"10.244.1.5"}, []string{"fd00:244::5"}))
	addForeign(t, h.ipvs)
	// A VIP someone deleted: the virtual server is still recognised through the nftables ClusterIP set.
	if err := h.vips.Unbind(addr("10.96.0.10")); err != nil {
		t.Fatal(err)
	}
	fresh := New(h.ipvs, h.vips, h.rules, h.clock, Options{}) // `agent --cleanup` is a new process
	if err := fresh.Cleanup(h.ctx); err != nil {
		t.Fatal(err)
	}
	vs, _ := ipvs.Snapshot(h.ipvs)
	if got := ipvs.Render(vs); got != foreignSave {
		t.Errorf("after Cleanup:\n%s\nwant\n%s", got, foreignSave)
	}
	if h.vips.InterfaceExists() || h.rules.TableExists() {
		t.Error("Cleanup left the dummy interface or the nftables table")
	}
	// Running it again is harmless.
	if err := fresh.Cleanup(h.ctx); err != nil {
		t.Errorf("second Cleanup: %v", err)
	}
}

func TestCleanupKeepsInterfaceWhenAServerCannotBeDeleted(t *testing.T) {
	h := newHarness(t)
	h.sync("ns/web", service(drain, tcp("10.96.0.10:80", "10.244.1.5:8080")))
	h.ipvs.SetError(fake.DeleteService, unix.EBUSY)
	if err := h.s.Cleanup(h.ctx); !errors.Is(err, unix.EBUSY) {
		t.Fatalf("err = %v, want EBUSY", err)
	}
	if !h.vips.InterfaceExists() || !h.rules.TableExists() {
		t.Error("Cleanup removed the interface or table although a virtual server is left: a rerun could not find it")
	}
	h.ipvs.SetError(fake.DeleteService, nil)
	if err := h.s.Cleanup(h.ctx); err != nil {
		t.Fatal(err)
	}
	if vs, _ := ipvs.Snapshot(h.ipvs); len(vs) != 0 {
		t.Errorf("left %v", vs)
	}
}

func TestSharedEndpointStaysInTheSetWhileAnyServiceUsesIt(t *testing.T) {
	h := newHarness(t)
	h.sync("ns/a", service(drain, tcp("10.96.0.10:80", "10.244.1.5:8080")))
	h.sync("ns/b", service(drain, tcp("10.96.0.20:80", "10.244.1.5:9090")))
	h.sync("ns/a", plan.Desired{})
	if els, _ := h.rules.Elements(); joinAddrs(els.Endpoints) != "10.244.1.5" || joinAddrs(els.ClusterIPs) != "10.96.0.20" {
		t.Errorf("sets after deleting ns/a: %+v", els)
	}
	h.sync("ns/b", plan.Desired{})
	if els, _ := h.rules.Elements(); len(els.Endpoints)+len(els.ClusterIPs) != 0 {
		t.Errorf("sets after deleting both: %+v", els)
	}
}

func TestConcurrentSyncs(t *testing.T) {
	h := newHarness(t)
	const n = 64
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 4 {
				key := fmt.Sprintf("ns/s%d", i)
				vip := fmt.Sprintf("10.96.1.%d", i)
				for round := range 3 {
					d := service(drain, tcp(vip+":80", fmt.Sprintf("10.244.%d.%d:8080", round, i), "10.244.100.1:8080"))
					if _, err := h.s.SyncService(h.ctx, key, d); err != nil {
						t.Error(err)
					}
				}
			}
		}()
	}
	// An audit racing the syncs must not break anything either.
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := h.s.Audit(h.ctx); err != nil {
			t.Error(err)
		}
	}()
	wg.Wait()
	if err := h.s.Audit(h.ctx); err != nil {
		t.Fatal(err)
	}
	vs, _ := ipvs.Snapshot(h.ipvs)
	if len(vs) != n {
		t.Fatalf("%d virtual servers, want %d", len(vs), n)
	}
	for _, v := range vs {
		if len(v.Destinations) != 2 {
			t.Errorf("%s has %d real servers, want 2", v.ServiceKey, len(v.Destinations))
		}
	}
	if got, want := h.metrics.gauges(), [3]int{n, 2 * n, 0}; got != want {
		t.Errorf("gauges = %v, want %v", got, want)
	}
}
