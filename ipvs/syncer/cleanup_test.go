package syncer

import (
	"net/netip"
	"reflect"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
	"github.com/ipvs-operator/ipvs-operator/ipvs/fake"
)

// CleanupReport says exactly what it removed, so `agent --cleanup` can print it; the foreign virtual server
// is not in the report, and a second run reports no virtual server and no VIP.
func TestCleanupReport(t *testing.T) {
	h := newHarness(t)
	addForeign(t, h.ipvs)
	h.sync("ns/web", service(drain, tcp("10.96.0.10:80", "10.244.1.5:8080"), udp("10.96.0.10:53", "10.244.1.5:5353")))

	got, err := h.s.CleanupReport(h.ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := Removed{
		VirtualServers: []ipvs.ServiceKey{skey(ipvs.UDP, "10.96.0.10:53"), skey(ipvs.TCP, "10.96.0.10:80")},
		VIPs:           []netip.Addr{addr("10.96.0.10")},
		Interface:      true,
		Table:          true,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("first run removed %+v\nwant %+v", got, want)
	}

	got, err = h.s.CleanupReport(h.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Removed{Interface: true, Table: true}); !reflect.DeepEqual(got, want) {
		t.Errorf("second run removed %+v, want nothing but the (absent) interface and table", got)
	}
}

// A failure keeps the interface and table and says so: Removed lists only what really went.
func TestCleanupReportOnFailure(t *testing.T) {
	h := newHarness(t)
	h.sync("ns/web", service(drain, tcp("10.96.0.10:80", "10.244.1.5:8080")))
	h.ipvs.SetError(fake.DeleteService, unix.EBUSY)
	got, err := h.s.CleanupReport(h.ctx)
	if err == nil {
		t.Fatal("no error")
	}
	if !reflect.DeepEqual(got, Removed{}) {
		t.Errorf("removed %+v, want nothing", got)
	}
}
