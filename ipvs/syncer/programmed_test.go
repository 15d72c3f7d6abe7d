package syncer

import (
	"testing"
	"time"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
)

// TestProgrammedIsTheCacheNotADump: /debug/ipvs is served from Programmed, so it must print what the kernel
// holds for the agent (Services, draining real servers at weight 0, adopted orphans) without a single
// kernel call, and print it the same way every time.
func TestProgrammedIsTheCacheNotADump(t *testing.T) {
	h := newHarness(t)
	// An orphan: a virtual server on a bound VIP that no Service has claimed since the restart.
	if err := h.vips.Bind(addr("10.96.0.99")); err != nil {
		t.Fatal(err)
	}
	if err := h.ipvs.AddService(ipvs.Service{ServiceKey: skey(ipvs.TCP, "10.96.0.99:443"), Scheduler: "rr"}); err != nil {
		t.Fatal(err)
	}
	h.restart()
	h.sync("ns/web", web([]string{"10.244.2.5", "10.244.1.5", "10.244.1.7"}, []string{"fd00:244::5"}))
	h.sync("ns/db", service(time.Minute, tcp("10.96.0.20:5432", "10.244.1.9:5432")))
	// A real server removed with live connections drains at weight 0.
	if err := h.ipvs.SetConnections(skey(ipvs.TCP, "10.96.0.20:5432"), dkey("10.244.1.9:5432"), 1, 0); err != nil {
		t.Fatal(err)
	}
	h.sync("ns/db", service(time.Minute, tcp("10.96.0.20:5432", "10.244.1.8:5432")))
	h.kernelOps()

	got := ipvs.Render(h.s.Programmed())
	if ops := h.kernelOps(); len(ops) != 0 {
		t.Errorf("Programmed called the kernel: %v", ops)
	}
	snap, err := ipvs.Snapshot(h.ipvs)
	if err != nil {
		t.Fatal(err)
	}
	if want := ipvs.Render(snap); got != want {
		t.Errorf("Programmed rendered\n%s\nthe kernel holds\n%s", got, want)
	}
	for i := range 20 {
		if again := ipvs.Render(h.s.Programmed()); again != got {
			t.Fatalf("call %d rendered\n%s\nthe first\n%s", i, again, got)
		}
	}
}
