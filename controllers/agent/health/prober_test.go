package health

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fast is a check with a short period, so the tests take milliseconds of probing.
var fast = Check{Protocol: TCP, Period: 20 * time.Millisecond, Timeout: 10 * time.Millisecond, UnhealthyThreshold: 2, HealthyThreshold: 2}

func target(t *testing.T, addr string, c Check) Target {
	t.Helper()
	ap := netip.MustParseAddrPort(addr)
	return Target{Addr: ap.Addr(), Port: ap.Port(), Check: c}
}

func start(t *testing.T, opts Options) *Prober {
	t.Helper()
	p := NewProber(opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = p.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return p
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A real TCP listener on loopback stops answering, then answers again: the target goes out after the
// unhealthy threshold, its owners are told, and it comes back after the healthy threshold.
func TestProberTCPOutAndBack(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	var mu sync.Mutex
	var told []string
	p := start(t, Options{OnChange: func(owners []string) {
		mu.Lock()
		told = append(told, owners...)
		mu.Unlock()
	}})
	tg := target(t, addr, fast)
	p.Set("ns/web", []Target{tg})
	p.Set("ns/api", []Target{tg})
	if p.Unhealthy(tg) {
		t.Fatal("a new target starts unhealthy; it must trust readiness")
	}
	time.Sleep(5 * fast.Period)
	if p.Unhealthy(tg) {
		t.Fatal("a listening target turned unhealthy")
	}

	_ = ln.Close()
	eventually(t, "the closed port is unhealthy", func() bool { return p.Unhealthy(tg) })
	mu.Lock()
	slices.Sort(told)
	if !slices.Equal(told, []string{"ns/api", "ns/web"}) {
		t.Errorf("owners told %v, want both", told)
	}
	told = nil
	mu.Unlock()

	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("cannot listen on %s again: %v", addr, err)
	}
	defer ln.Close()
	eventually(t, "the port answering again is healthy", func() bool { return !p.Unhealthy(tg) })
	if n, bad := p.Counts(); n != 1 || bad != 0 {
		t.Errorf("Counts = %d, %d; want one shared target, healthy", n, bad)
	}
}

func TestProberHTTPStatus(t *testing.T) {
	var code atomic.Int32
	code.Store(200)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		w.WriteHeader(int(code.Load()))
	}))
	defer srv.Close()
	c := fast
	c.Protocol, c.Path, c.Statuses = HTTP, "/healthz", "200-204"
	p := start(t, Options{})
	tg := target(t, srv.Listener.Addr().String(), c)
	p.Set("ns/web", []Target{tg})
	time.Sleep(5 * c.Period)
	if p.Unhealthy(tg) {
		t.Fatal("200 from /healthz is unhealthy")
	}
	code.Store(503)
	eventually(t, "503 is unhealthy", func() bool { return p.Unhealthy(tg) })
	code.Store(204)
	eventually(t, "204 is healthy again", func() bool { return !p.Unhealthy(tg) })

	if err := Probe(context.Background(), Target{Addr: tg.Addr, Port: tg.Port, Check: Check{Protocol: HTTP, Path: "/nope", Timeout: time.Second}}); !errors.Is(err, ErrStatus) {
		t.Errorf("404: err = %v, want ErrStatus", err)
	}
}

// Shared targets are probed once per period; the number of probes in flight never exceeds MaxInFlight; a
// target nobody needs is no longer probed.
func TestProberSharingConcurrencyAndRemoval(t *testing.T) {
	var (
		mu       sync.Mutex
		count    = map[Target]int{}
		inFlight atomic.Int32
		maxSeen  atomic.Int32
	)
	probe := func(_ context.Context, tg Target) error {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for {
			m := maxSeen.Load()
			if n <= m || maxSeen.CompareAndSwap(m, n) {
				break
			}
		}
		time.Sleep(2 * time.Millisecond)
		mu.Lock()
		count[tg]++
		mu.Unlock()
		return nil
	}
	c := fast
	c.Period = 50 * time.Millisecond
	p := start(t, Options{Probe: probe, MaxInFlight: 4})
	all := make([]Target, 0, 40)
	for i := range 40 {
		all = append(all, Target{Addr: netip.AddrFrom4([4]byte{10, 244, 1, byte(i)}), Port: 8080, Check: c})
	}
	// Three Services share the same 40 targets.
	for _, s := range []string{"ns/a", "ns/b", "ns/c"} {
		p.Set(s, all)
	}
	time.Sleep(10 * c.Period)
	mu.Lock()
	for _, tg := range all {
		// 10 periods, ±10% jitter and a random first probe: about 9-11 probes each, never 3x.
		if n := count[tg]; n < 5 || n > 13 {
			t.Errorf("%s probed %d times in 10 periods, want about 10 (once however many Services share it)", tg, n)
		}
	}
	mu.Unlock()
	if m := maxSeen.Load(); m > 4 {
		t.Errorf("%d probes in flight, MaxInFlight is 4", m)
	}

	p.Set("ns/a", nil)
	p.Set("ns/b", nil)
	if n, _ := p.Counts(); n != 40 {
		t.Errorf("%d targets after two of three owners left, want 40", n)
	}
	p.Set("ns/c", all[:1])
	if n, _ := p.Counts(); n != 1 {
		t.Fatalf("%d targets, want 1", n)
	}
	time.Sleep(2 * c.Period) // let probes under way finish
	mu.Lock()
	before := count[all[1]]
	mu.Unlock()
	time.Sleep(4 * c.Period)
	mu.Lock()
	defer mu.Unlock()
	if count[all[1]] != before {
		t.Errorf("a target no owner needs was probed again (%d -> %d)", before, count[all[1]])
	}
}
