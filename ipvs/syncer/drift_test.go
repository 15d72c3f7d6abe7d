package syncer

import (
	"errors"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
	"github.com/ipvs-operator/ipvs-operator/ipvs/fake"
)

// canaryReads are the kernel reads one CheckDrift may make, whatever the number of Services.
var canaryReads = map[fake.Verb]int{fake.InterfaceUp: 1, fake.Exists: 1, fake.Service: 1}

// allOps returns every fake's calls since the last reset, then resets them.
func (h *harness) allOps() map[fake.Verb]int {
	ops := h.rules.Ops()
	if ops == nil {
		ops = map[fake.Verb]int{}
	}
	for v, n := range h.kernelOps() {
		ops[v] = n
	}
	return ops
}

func TestCheckDriftAndResync(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(h *harness)
		want   Drift
		reads  map[fake.Verb]int
		// same: the interface came back up with its VIPs, so the audit has nothing else to repair.
		same bool
	}{
		{
			name: "nothing happened", damage: func(*harness) {}, want: NoDrift, reads: canaryReads,
		},
		{
			// kube-proxy's leftover cleanup at start (nftables mode), or `ipvsadm -C`.
			name: "IPVS flushed", want: DriftIPVS, reads: canaryReads,
			damage: func(h *harness) { h.ipvs.Flush(); addForeign(h.t, h.ipvs) },
		},
		{
			name: "dummy interface deleted", want: DriftInterface, reads: map[fake.Verb]int{fake.InterfaceUp: 1},
			damage: func(h *harness) {
				if err := h.vips.DeleteInterface(); err != nil {
					h.t.Fatal(err)
				}
			},
		},
		{
			name: "dummy interface down", want: DriftInterface, reads: map[fake.Verb]int{fake.InterfaceUp: 1}, same: true,
			damage: func(h *harness) { h.vips.SetDown() },
		},
		{
			// `nft flush ruleset` by a firewall reload, or `nft delete table inet ipvs-operator`.
			name: "nftables table deleted", want: DriftTable, reads: map[fake.Verb]int{fake.InterfaceUp: 1, fake.Exists: 1},
			damage: func(h *harness) {
				if err := h.rules.Delete(); err != nil {
					h.t.Fatal(err)
				}
			},
		},
		{
			name: "everything at once", want: DriftInterface, reads: map[fake.Verb]int{fake.InterfaceUp: 1},
			damage: func(h *harness) {
				h.ipvs.Flush()
				addForeign(h.t, h.ipvs)
				if err := h.vips.DeleteInterface(); err != nil {
					h.t.Fatal(err)
				}
				if err := h.rules.Delete(); err != nil {
					h.t.Fatal(err)
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			addForeign(t, h.ipvs)
			h.sync("ns/web", web([]string{"10.244.1.5", "10.244.2.5"}, []string{"fd00:244::5"}))
			h.sync("ns/db", service(drain, tcp("10.96.0.30:5432", "10.244.3.5:5432")))
			h.sync("ns/empty", service(drain)) // a Service with no VIP yet
			want := h.state()

			tc.damage(h)
			h.allOps()
			got, err := h.s.CheckDrift(h.ctx)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("CheckDrift = %q, want %q", got, tc.want)
			}
			if diff := cmp.Diff(tc.reads, h.allOps()); diff != "" {
				t.Errorf("CheckDrift's kernel calls (-want +got):\n%s", diff)
			}
			if tc.want == NoDrift {
				return
			}
			if diff := cmp.Diff([]Drift{tc.want}, h.metrics.drifts); diff != "" {
				t.Errorf("drift metrics (-want +got):\n%s", diff)
			}
			if err := h.s.Resync(h.ctx); err != nil {
				t.Fatal(err)
			}
			if got := h.state(); got != want {
				t.Errorf("after Resync the kernel holds\n%s\nwant\n%s", got, want)
			}
			if rep := h.metrics.lastAudit(); (rep.Findings() == 0) != tc.same {
				t.Errorf("audit report %+v: want the drift counted", rep)
			}
			if d, err := h.s.CheckDrift(h.ctx); d != NoDrift || err != nil {
				t.Errorf("after Resync CheckDrift = %q, %v; want no drift", d, err)
			}
			// The cache is right again: the same desired state costs nothing.
			if res := h.sync("ns/web", web([]string{"10.244.1.5", "10.244.2.5"}, []string{"fd00:244::5"})); res.Ops != 0 {
				t.Errorf("after Resync a no-op sync made %d kernel operations", res.Ops)
			}
		})
	}
}

func TestCheckDriftWithoutServices(t *testing.T) {
	h := newHarness(t)
	addForeign(t, h.ipvs)
	h.ipvs.Flush() // nothing of ours to lose: only someone else's virtual server went
	h.allOps()
	if d, err := h.s.CheckDrift(h.ctx); d != NoDrift || err != nil {
		t.Fatalf("CheckDrift = %q, %v; want no drift", d, err)
	}
	if ops := h.allOps(); ops[fake.Service] != 0 {
		t.Errorf("with no virtual server of ours CheckDrift read one: %v", ops)
	}
}

func TestCheckDriftErrors(t *testing.T) {
	h := newHarness(t)
	h.sync("ns/db", service(drain, tcp("10.96.0.30:5432", "10.244.3.5:5432")))
	boom := errors.New("netlink: no buffer space")
	h.ipvs.SetError(fake.Service, boom)
	if d, err := h.s.CheckDrift(h.ctx); d != NoDrift || !errors.Is(err, boom) {
		t.Errorf("CheckDrift = %q, %v; want the read's error and no verdict", d, err)
	}
	fresh := New(h.ipvs, h.vips, h.rules, h.clock, Options{})
	if _, err := fresh.CheckDrift(h.ctx); !errors.Is(err, ErrNotAdopted) {
		t.Errorf("before Adopt: err = %v, want ErrNotAdopted", err)
	}
}

// TestCheckDriftIsO1 checks the canary's cost at scale by counting kernel reads, not by timing.
func TestCheckDriftIsO1(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 Services")
	}
	h := newHarness(t)
	for i := range 10_000 {
		vip := fmt.Sprintf("10.96.%d.%d", i/250, i%250+1)
		h.sync(fmt.Sprintf("ns/s%d", i), service(drain, tcp(vip+":80", fmt.Sprintf("10.%d.%d.%d:8080", 128+i/65536, i/256%256, i%256))))
	}
	h.allOps()
	for range 100 {
		if d, err := h.s.CheckDrift(h.ctx); d != NoDrift || err != nil {
			t.Fatalf("CheckDrift = %q, %v", d, err)
		}
	}
	want := map[fake.Verb]int{fake.InterfaceUp: 100, fake.Exists: 100, fake.Service: 100}
	if diff := cmp.Diff(want, h.allOps()); diff != "" {
		t.Errorf("100 CheckDrift calls over 10,000 Services made these kernel calls (-want +got):\n%s", diff)
	}
	h.ipvs.Flush()
	if d, _ := h.s.CheckDrift(h.ctx); d != DriftIPVS {
		t.Errorf("after a flush CheckDrift = %q, want %q", d, DriftIPVS)
	}
}

// TestCheckDriftSkipsAServiceInDoubt: the probe never reports drift from a cache it does not trust.
func TestCheckDriftSkipsAServiceInDoubt(t *testing.T) {
	h := newHarness(t)
	h.sync("ns/db", service(drain, tcp("10.96.0.30:5432", "10.244.3.5:5432")))
	// A sync that failed part-way leaves the entry dirty; someone then deletes its virtual server.
	h.ipvs.SetError(fake.AddDestination, errors.New("refused"))
	if _, err := h.s.SyncService(h.ctx, "ns/db", service(drain, tcp("10.96.0.30:5432", "10.244.3.5:5432", "10.244.3.6:5432"))); err == nil {
		t.Fatal("want the injected error")
	}
	h.ipvs.SetError(fake.AddDestination, nil)
	if err := h.ipvs.DeleteService(skey(ipvs.TCP, "10.96.0.30:5432")); err != nil {
		t.Fatal(err)
	}
	if d, err := h.s.CheckDrift(h.ctx); d != NoDrift || err != nil {
		t.Errorf("CheckDrift on a dirty entry = %q, %v; want no verdict (its next sync re-reads it)", d, err)
	}
}
