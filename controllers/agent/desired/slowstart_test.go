package desired

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
)

func TestRampWeight(t *testing.T) {
	const w = 100 * time.Second
	for _, tc := range []struct {
		elapsed    time.Duration
		weight     int
		next       time.Duration
		windowOver time.Duration // window, if not w
	}{
		{elapsed: 0, weight: 10, next: 20 * time.Second},
		{elapsed: -time.Second, weight: 10, next: 20 * time.Second}, // a clock step back: still the first step
		{elapsed: 19 * time.Second, weight: 10, next: time.Second},
		{elapsed: 20 * time.Second, weight: 20, next: 10 * time.Second},
		{elapsed: 55 * time.Second, weight: 50, next: 5 * time.Second},
		{elapsed: 90 * time.Second, weight: 90, next: 10 * time.Second},
		{elapsed: 99*time.Second + 999*time.Millisecond, weight: 90, next: time.Millisecond},
		{elapsed: w, weight: 100},
		{elapsed: time.Hour, weight: 100},
		{elapsed: time.Second, weight: 100, windowOver: -1}, // no window: full at once
		{elapsed: 1500 * time.Millisecond, weight: 10, next: 500 * time.Millisecond, windowOver: 10 * time.Second},
	} {
		window := w
		if tc.windowOver != 0 {
			window = tc.windowOver
		}
		weight, next := RampWeight(tc.elapsed, window)
		if weight != tc.weight || next != tc.next {
			t.Errorf("RampWeight(%v, %v) = %d, %v; want %d, %v", tc.elapsed, window, weight, next, tc.weight, tc.next)
		}
	}
}

// TestRampWeightSteps: over a whole window the weight never falls, changes at most SlowStartSteps times,
// ends full exactly at the window, and rampElapsed finds every step's start again (what a restarted agent
// relies on).
func TestRampWeightSteps(t *testing.T) {
	for _, window := range []time.Duration{time.Second, 7 * time.Second, 30 * time.Second, time.Hour} {
		last, changes := 0, 0
		for e := time.Duration(0); e <= window; e += window / 1000 {
			got, next := RampWeight(e, window)
			if got < last {
				t.Fatalf("window %v: weight fell from %d to %d at %v", window, last, got, e)
			}
			if got != last {
				changes++
				start, ok := rampElapsed(got, window)
				if got < SlowStartFullWeight && (!ok || start > e || e-start >= window/SlowStartSteps*2) {
					t.Errorf("window %v: rampElapsed(%d) = %v, %v at %v", window, got, start, ok, e)
				}
				if got < SlowStartFullWeight {
					if w, _ := RampWeight(start, window); w != got {
						t.Errorf("window %v: RampWeight(rampElapsed(%d)) = %d", window, got, w)
					}
				}
			}
			if (got == SlowStartFullWeight) != (next == 0) {
				t.Errorf("window %v at %v: weight %d with next %v", window, e, got, next)
			}
			last = got
		}
		if w, _ := RampWeight(window-1, window); w == SlowStartFullWeight {
			t.Errorf("window %v: full before the window ended", window)
		}
		if changes > SlowStartSteps {
			t.Errorf("window %v: %d weight changes, want at most %d", window, changes, SlowStartSteps)
		}
	}
	for _, w := range []int{0, 1, 5, 100, 101, -10} {
		if _, ok := rampElapsed(w, time.Minute); ok {
			t.Errorf("rampElapsed(%d) says it is a ramp weight", w)
		}
	}
}

func TestSlowStart(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	const window = 100 * time.Second
	vs := ipvs.ServiceKey{Address: netip.MustParseAddr("10.96.0.10"), Port: 80, Protocol: ipvs.TCP}
	vs2 := ipvs.ServiceKey{Address: netip.MustParseAddr("10.96.0.10"), Port: 53, Protocol: ipvs.UDP}
	a := ipvs.DestinationKey{Address: netip.MustParseAddr("10.244.1.1"), Port: 8080}
	b := ipvs.DestinationKey{Address: netip.MustParseAddr("10.244.1.2"), Port: 8080}
	c := ipvs.DestinationKey{Address: netip.MustParseAddr("10.244.1.3"), Port: 8080}
	state := func(servers map[ipvs.ServiceKey][]ipvs.Destination) State {
		st := State{VIPs: []netip.Addr{vs.Address}}
		for _, k := range []ipvs.ServiceKey{vs2, vs} {
			if ds, ok := servers[k]; ok {
				st.Servers = append(st.Servers, ipvs.VirtualServer{Service: ipvs.Service{ServiceKey: k, Scheduler: "wrr"}, Destinations: ds})
			}
		}
		return st
	}
	d := func(k ipvs.DestinationKey, w int) ipvs.Destination {
		return ipvs.Destination{DestinationKey: k, Weight: w}
	}

	for _, tc := range []struct {
		name      string
		in        map[ipvs.ServiceKey][]ipvs.Destination
		prev      Ramps
		now       time.Time
		want      map[ipvs.ServiceKey][]ipvs.Destination
		wantRamps Ramps
		recheck   time.Duration
	}{{
		name:      "a new virtual server starts at full weight: no ramp at the agent's start or the Service's",
		in:        map[ipvs.ServiceKey][]ipvs.Destination{vs: {d(a, 1), d(b, 1)}},
		now:       t0,
		want:      map[ipvs.ServiceKey][]ipvs.Destination{vs: {d(a, 100), d(b, 100)}},
		wantRamps: Ramps{vs: {a: {}, b: {}}},
	}, {
		name:      "a new endpoint of a known virtual server ramps from a tenth",
		in:        map[ipvs.ServiceKey][]ipvs.Destination{vs: {d(a, 1), d(b, 1), d(c, 1)}},
		prev:      Ramps{vs: {a: {}, b: {}}},
		now:       t0,
		want:      map[ipvs.ServiceKey][]ipvs.Destination{vs: {d(a, 100), d(b, 100), d(c, 10)}},
		wantRamps: Ramps{vs: {a: {}, b: {}, c: t0}},
		recheck:   20 * time.Second,
	}, {
		name:      "mid-ramp: the weight is a function of the time since it became usable",
		in:        map[ipvs.ServiceKey][]ipvs.Destination{vs: {d(a, 1), d(c, 1)}},
		prev:      Ramps{vs: {a: {}, c: t0}},
		now:       t0.Add(63 * time.Second),
		want:      map[ipvs.ServiceKey][]ipvs.Destination{vs: {d(a, 100), d(c, 60)}},
		wantRamps: Ramps{vs: {a: {}, c: t0}},
		recheck:   7 * time.Second,
	}, {
		name:      "the ramp ends: full weight, forgotten start, no timer",
		in:        map[ipvs.ServiceKey][]ipvs.Destination{vs: {d(a, 1), d(c, 1)}},
		prev:      Ramps{vs: {a: {}, c: t0}},
		now:       t0.Add(window),
		want:      map[ipvs.ServiceKey][]ipvs.Destination{vs: {d(a, 100), d(c, 100)}},
		wantRamps: Ramps{vs: {a: {}, c: {}}},
	}, {
		name:      "quiesced by the health check: weight 0 stays, forgotten, so it ramps when it comes back",
		in:        map[ipvs.ServiceKey][]ipvs.Destination{vs: {d(a, 1), d(b, 0)}},
		prev:      Ramps{vs: {a: {}, b: {}}},
		now:       t0,
		want:      map[ipvs.ServiceKey][]ipvs.Destination{vs: {d(a, 100), d(b, 0)}},
		wantRamps: Ramps{vs: {a: {}}},
	}, {
		name:      "back from unhealthy: ramps again",
		in:        map[ipvs.ServiceKey][]ipvs.Destination{vs: {d(a, 1), d(b, 1)}},
		prev:      Ramps{vs: {a: {}}},
		now:       t0,
		want:      map[ipvs.ServiceKey][]ipvs.Destination{vs: {d(a, 100), d(b, 10)}},
		wantRamps: Ramps{vs: {a: {}, b: t0}},
		recheck:   20 * time.Second,
	}, {
		name:      "a known virtual server with no usable endpoint: the first ones to come have nothing to ramp against",
		in:        map[ipvs.ServiceKey][]ipvs.Destination{vs: {d(a, 1), d(c, 1)}, vs2: {d(b, 1)}},
		prev:      Ramps{vs: {}},
		now:       t0.Add(time.Second),
		want:      map[ipvs.ServiceKey][]ipvs.Destination{vs: {d(a, 100), d(c, 100)}, vs2: {d(b, 100)}},
		wantRamps: Ramps{vs: {a: {}, c: {}}, vs2: {b: {}}},
	}, {
		name:      "the earliest next step of several ramps is the timer",
		in:        map[ipvs.ServiceKey][]ipvs.Destination{vs: {d(a, 1), d(b, 1)}, vs2: {d(c, 1)}},
		prev:      Ramps{vs: {a: t0, b: t0.Add(25 * time.Second)}, vs2: {c: t0.Add(-18 * time.Second)}},
		now:       t0.Add(30 * time.Second),
		want:      map[ipvs.ServiceKey][]ipvs.Destination{vs: {d(a, 30), d(b, 10)}, vs2: {d(c, 40)}},
		wantRamps: Ramps{vs: {a: t0, b: t0.Add(25 * time.Second)}, vs2: {c: t0.Add(-18 * time.Second)}},
		recheck:   2 * time.Second,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			in := state(tc.in)
			before := state(tc.in)
			got, ramps, recheck := SlowStart(in, window, tc.prev, tc.now)
			if diff := cmp.Diff(state(tc.want), got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("state (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantRamps, ramps, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("ramps (-want +got):\n%s", diff)
			}
			if recheck != tc.recheck {
				t.Errorf("recheck = %v, want %v", recheck, tc.recheck)
			}
			if diff := cmp.Diff(before, in, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("SlowStart modified its input:\n%s", diff)
			}
		})
	}
}

// TestResumeRamps: a restarted agent reads the previous one's ramps back from the kernel's weights: full and
// foreign weights are done, ramp weights continue from their step's start, weight 0 is not usable.
func TestResumeRamps(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	const window = 100 * time.Second
	vs := ipvs.ServiceKey{Address: netip.MustParseAddr("10.96.0.10"), Port: 80, Protocol: ipvs.TCP}
	k := func(i int) ipvs.DestinationKey {
		return ipvs.DestinationKey{Address: netip.AddrFrom4([4]byte{10, 244, 1, byte(i)}), Port: 8080}
	}
	have := []ipvs.VirtualServer{{Service: ipvs.Service{ServiceKey: vs, Scheduler: "wrr"}, Destinations: []ipvs.Destination{
		{DestinationKey: k(1), Weight: 100}, {DestinationKey: k(2), Weight: 1}, {DestinationKey: k(3), Weight: 0},
		{DestinationKey: k(4), Weight: 10}, {DestinationKey: k(5), Weight: 60}, {DestinationKey: k(6), Weight: 55},
	}}}
	got := ResumeRamps(have, window, t0)
	want := Ramps{vs: {k(1): {}, k(2): {}, k(4): t0, k(5): t0.Add(-60 * time.Second), k(6): {}}}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	// And the translation right after a restart keeps every weight the kernel has: nothing flaps.
	st := State{VIPs: []netip.Addr{vs.Address}, Servers: []ipvs.VirtualServer{{Service: have[0].Service, Destinations: []ipvs.Destination{
		{DestinationKey: k(1), Weight: 1}, {DestinationKey: k(2), Weight: 1}, {DestinationKey: k(4), Weight: 1}, {DestinationKey: k(5), Weight: 1},
	}}}}
	out, _, recheck := SlowStart(st, window, got, t0)
	wantW := map[ipvs.DestinationKey]int{k(1): 100, k(2): 100, k(4): 10, k(5): 60}
	for _, d := range out.Servers[0].Destinations {
		if d.Weight != wantW[d.DestinationKey] {
			t.Errorf("%v: weight %d after a restart, want %d", d.DestinationKey, d.Weight, wantW[d.DestinationKey])
		}
	}
	if recheck != 10*time.Second {
		t.Errorf("recheck = %v, want 10s (k(5) reaches 70 then; k(4) reaches 20 at 20s)", recheck)
	}
}

// BenchmarkSlowStart1000: the cost of weighing one Service of 1,000 endpoints, ten of them ramping (what each
// step of a ramp costs on top of the translation).
func BenchmarkSlowStart1000(b *testing.B) {
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	vs := ipvs.ServiceKey{Address: netip.MustParseAddr("10.96.0.10"), Port: 80, Protocol: ipvs.TCP}
	st := State{VIPs: []netip.Addr{vs.Address}, Servers: []ipvs.VirtualServer{{Service: ipvs.Service{ServiceKey: vs, Scheduler: "wrr"}}}}
	prev := Ramps{vs: {}}
	for i := range 1000 {
		k := ipvs.DestinationKey{Address: netip.AddrFrom4([4]byte{10, 244, byte(i / 250), byte(i % 250)}), Port: 8080}
		st.Servers[0].Destinations = append(st.Servers[0].Destinations, ipvs.Destination{DestinationKey: k, Weight: 1})
		var since time.Time
		if i%100 == 0 {
			since = t0
		}
		prev[vs][k] = since
	}
	b.ReportAllocs()
	for b.Loop() {
		_, _, _ = SlowStart(st, time.Minute, prev, t0.Add(30*time.Second))
	}
}
