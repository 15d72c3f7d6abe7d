package syncer

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
	"github.com/ipvs-operator/ipvs-operator/ipvs/fake"
)

// partialDump is a kernel whose one-read dump misses a virtual server, as /proc/net/ip_vs may when a
// virtual server is deleted while it is read (the rest of the table moves up under the reader).
type partialDump struct {
	*fake.IPVS
	omit ipvs.ServiceKey
}

func (p *partialDump) AllDestinations() (map[ipvs.ServiceKey][]ipvs.ObservedDestination, error) {
	all, err := p.IPVS.AllDestinations()
	delete(all, p.omit)
	return all, err
}

// TestAuditReadsAllRealServersAtOnce: with many virtual servers the audit reads every real server in one
// dump, not one read per virtual server; it still finds and repairs piecemeal drift, and a virtual server the
// dump missed is read on its own, not taken for lost.
func TestAuditReadsAllRealServersAtOnce(t *testing.T) {
	h := newHarness(t)
	const n = dumpFrom + 8
	keys := make([]ipvs.ServiceKey, n)
	for i := range n {
		vip := fmt.Sprintf("10.96.1.%d:80", i+1)
		keys[i] = skey(ipvs.TCP, vip)
		h.sync(fmt.Sprintf("ns/s%02d", i), service(drain, tcp(vip, fmt.Sprintf("10.244.1.%d:8080", i+1), fmt.Sprintf("10.244.2.%d:8080", i+1))))
	}
	want := h.state()

	h.kernelOps()
	if err := h.s.Audit(h.ctx); err != nil {
		t.Fatal(err)
	}
	if ops := h.kernelOps(); ops[fake.AllDestinations] != 1 || ops[fake.Destinations] != 0 {
		t.Errorf("audit of %d virtual servers made %v; want one dump and no read per virtual server", n, ops)
	}
	if rep := h.metrics.lastAudit(); rep.Findings() != 0 {
		t.Errorf("audit of an intact kernel found %+v", rep)
	}

	// Piecemeal drift: a weight changed, a real server deleted.
	if err := h.ipvs.UpdateDestination(keys[3], ipvs.Destination{DestinationKey: dkey("10.244.1.4:8080"), Weight: 7}); err != nil {
		t.Fatal(err)
	}
	if err := h.ipvs.DeleteDestination(keys[9], dkey("10.244.2.10:8080")); err != nil {
		t.Fatal(err)
	}
	if err := h.s.Audit(h.ctx); err != nil {
		t.Fatal(err)
	}
	if rep := h.metrics.lastAudit(); rep.Services != 2 || rep.Ops != 2 {
		t.Errorf("audit report %+v; want 2 Services repaired with 2 operations", rep)
	}
	if got := h.state(); got != want {
		t.Errorf("after the audit:\n%s\nwant\n%s", got, want)
	}

	// A dump that misses a virtual server.
	p := &partialDump{IPVS: h.ipvs, omit: keys[5]}
	h.s.ipvs = p
	h.kernelOps()
	if err := h.s.Audit(h.ctx); err != nil {
		t.Fatal(err)
	}
	if ops := h.kernelOps(); ops[fake.Destinations] != 1 {
		t.Errorf("audit made %v; want the virtual server the dump missed read on its own", ops)
	}
	if rep := h.metrics.lastAudit(); rep.Findings() != 0 {
		t.Errorf("audit found %+v; the virtual server the dump missed is still there", rep)
	}
	if got := h.state(); got != want {
		t.Errorf("after the audit:\n%s\nwant\n%s", got, want)
	}
}

// TestAuditReappliesWhatIsNotSettled: the audit skips the Services whose kernel state matches the cache and
// whose last sync did all it wanted, but not the others, which it must still finish: a sync that failed
// part-way, a drain whose deadline passed, a VIP another Service held and has given up.
func TestAuditReappliesWhatIsNotSettled(t *testing.T) {
	web := service(drain, tcp("10.96.0.10:80", "10.244.1.5:8080", "10.244.1.6:8080"))
	for _, tc := range []struct {
		name  string
		setup func(h *harness)
	}{
		{"a sync that failed part-way", func(h *harness) {
			h.ipvs.SetError(fake.AddDestination, unix.ENOMEM)
			if _, err := h.s.SyncService(h.ctx, "ns/web", web); !errors.Is(err, unix.ENOMEM) {
				t.Fatalf("err = %v", err)
			}
			h.ipvs.SetError(fake.AddDestination, nil)
		}},
		{"a drain past its deadline", func(h *harness) {
			with := service(drain, tcp("10.96.0.10:80", "10.244.1.5:8080", "10.244.1.6:8080", "10.244.1.7:8080"))
			h.sync("ns/web", with)
			if err := h.ipvs.SetConnections(skey(ipvs.TCP, "10.96.0.10:80"), dkey("10.244.1.7:8080"), 2, 0); err != nil {
				t.Fatal(err)
			}
			h.sync("ns/web", web) // 10.244.1.7 drains
			h.clock.SetTime(t0.Add(drain + time.Second))
		}},
		{"a VIP another Service gave up", func(h *harness) {
			h.sync("ns/old", service(drain, tcp("10.96.0.10:80", "10.244.9.9:8080")))
			if _, err := h.s.SyncService(h.ctx, "ns/web", web); !errors.Is(err, ErrConflict) {
				t.Fatalf("err = %v, want ErrConflict", err)
			}
			h.sync("ns/old", service(drain))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			tc.setup(h)
			if err := h.s.Audit(h.ctx); err != nil {
				t.Fatal(err)
			}
			want := newHarness(t)
			want.sync("ns/web", web)
			if got, w := h.state(), want.state(); got != w {
				t.Errorf("after the audit:\n%s\nwant\n%s", got, w)
			}
		})
	}
}
