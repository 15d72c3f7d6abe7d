package agent

import (
	"context"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/ipvs-operator/ipvs-operator/controllers/agent/desired"

	"github.com/ipvs-operator/ipvs-operator/controllers/agent/health"
	"github.com/ipvs-operator/ipvs-operator/ipvs"
)

// A restarted agent must not put back an endpoint the previous agent had taken out: a target the prober has
// not seen yet starts unhealthy when the adopted kernel had a real server of its address at weight 0, and
// healthy otherwise (new endpoints trust readiness).
func TestHealthCheckerRemembersTheKernel(t *testing.T) {
	vip := netip.MustParseAddr("10.96.0.10")
	out, in := netip.MustParseAddr("10.244.1.5"), netip.MustParseAddr("10.244.1.6")
	reads := 0
	adopted := func() []ipvs.VirtualServer {
		reads++
		return []ipvs.VirtualServer{{
			Service: ipvs.Service{ServiceKey: ipvs.ServiceKey{Address: vip, Port: 80, Protocol: ipvs.TCP}},
			Destinations: []ipvs.Destination{
				{DestinationKey: ipvs.DestinationKey{Address: out, Port: 8080}, Weight: 0},
				{DestinationKey: ipvs.DestinationKey{Address: in, Port: 8080}, Weight: 1},
			},
		}}
	}
	check := health.Check{Protocol: health.TCP, Period: time.Hour, Timeout: time.Second, UnhealthyThreshold: 3, HealthyThreshold: 2}
	tOut := health.Target{Addr: out, Port: 8080, Check: check}
	tIn := health.Target{Addr: in, Port: 8080, Check: check}

	h := NewHealthChecker(health.Options{}, adopted)
	if !h.Unhealthy(tOut) || h.Unhealthy(tIn) {
		t.Fatalf("before registration: out %v, in %v; want true, false", h.Unhealthy(tOut), h.Unhealthy(tIn))
	}
	h.prober.Set("ns/web", []health.Target{tOut, tIn})
	if !h.Unhealthy(tOut) || h.Unhealthy(tIn) {
		t.Errorf("registered: out %v, in %v; want the remembered verdicts true, false", h.Unhealthy(tOut), h.Unhealthy(tIn))
	}
	if reads != 1 {
		t.Errorf("the adopted table was read %d times, want once", reads)
	}

	// Without an adopted table, everything new is healthy.
	if NewHealthChecker(health.Options{}, nil).Unhealthy(tOut) {
		t.Error("no adopted table: a new target is unhealthy")
	}
}

// The gauges of real servers out and Services in panic mode follow each Service's latest translation.
func TestHealthCheckerGauges(t *testing.T) {
	h := NewHealthChecker(health.Options{}, nil)
	ctx := context.Background()
	a, b := types.NamespacedName{Namespace: "ns", Name: "a"}, types.NamespacedName{Namespace: "ns", Name: "b"}
	tg := []health.Target{{Addr: netip.MustParseAddr("10.244.1.5"), Port: 8080}}
	vs := ipvs.ServiceKey{Address: netip.MustParseAddr("10.96.0.10"), Port: 80, Protocol: ipvs.TCP}
	check := func(out, panicking float64) {
		t.Helper()
		if got := gauge(t, metricHealthOut); got != out {
			t.Errorf("real servers out = %v, want %v", got, out)
		}
		if got := gauge(t, metricHealthPanic); got != panicking {
			t.Errorf("Services in panic mode = %v, want %v", got, panicking)
		}
	}
	h.observe(ctx, a, nil, desired.Health{Targets: tg, Out: 2}, "p", nil, "node-a")
	h.observe(ctx, b, nil, desired.Health{Targets: tg, Panic: []ipvs.ServiceKey{vs}}, "p", nil, "node-a")
	check(2, 1)
	h.observe(ctx, a, nil, desired.Health{Targets: tg, Out: 1}, "p", nil, "node-a")
	check(1, 1)
	h.observe(ctx, b, nil, desired.Health{}, "", nil, "node-a") // b has no health check any more
	h.observe(ctx, a, nil, desired.Health{}, "", nil, "node-a")
	check(0, 0)
}

func gauge(t *testing.T, g prometheus.Gauge) float64 {
	t.Helper()
	m := &dto.Metric{}
	if err := g.Write(m); err != nil {
		t.Fatal(err)
	}
	return m.GetGauge().GetValue()
}

// drain returns the Events a FakeRecorder holds.
func drain(rec *events.FakeRecorder) []string {
	var out []string
	for {
		select {
		case e := <-rec.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

// Endpoint Events: one Warning per target newly taken out and one Normal per target back in rotation, not one
// per virtual server; none for a target that left for another reason; a flapping endpoint is rate-limited.
func TestHealthCheckerEndpointEvents(t *testing.T) {
	h := NewHealthChecker(health.Options{}, nil)
	ctx := context.Background()
	key := types.NamespacedName{Namespace: "ns", Name: "web"}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web"}}
	rec := events.NewFakeRecorder(1000)
	check := health.Check{Protocol: health.TCP, Period: time.Hour, Timeout: time.Second, UnhealthyThreshold: 3, HealthyThreshold: 2}
	t1 := health.Target{Addr: netip.MustParseAddr("10.244.1.5"), Port: 8080, Check: check}
	t2 := health.Target{Addr: netip.MustParseAddr("10.244.1.6"), Port: 8080, Check: check}
	vs80 := ipvs.ServiceKey{Address: netip.MustParseAddr("10.96.0.10"), Port: 80, Protocol: ipvs.TCP}
	vs81 := ipvs.ServiceKey{Address: netip.MustParseAddr("10.96.0.10"), Port: 81, Protocol: ipvs.TCP}
	out := func(targets ...health.Target) desired.Health {
		hl := desired.Health{Targets: []health.Target{t1, t2}}
		for _, tg := range targets {
			for _, vs := range []ipvs.ServiceKey{vs80, vs81} { // two ports, one probe target
				hl.Taken = append(hl.Taken, desired.Taken{Server: vs, Real: ipvs.DestinationKey{Address: tg.Addr, Port: tg.Port}, Target: tg})
				hl.Out++
			}
		}
		return hl
	}

	h.observe(ctx, key, svc, out(), "p", rec, "node-a")
	if got := drain(rec); len(got) != 0 {
		t.Fatalf("all healthy: Events %q, want none", got)
	}
	h.observe(ctx, key, svc, out(t1), "p", rec, "node-a")
	h.observe(ctx, key, svc, out(t1), "p", rec, "node-a") // no transition
	got := drain(rec)
	want := "Warning EndpointUnhealthy node node-a: endpoint tcp://10.244.1.5:8080 failed 3 health checks in a row: out of rotation on this node"
	if len(got) != 1 || got[0] != want {
		t.Fatalf("taken out: Events %q, want [%q]", got, want)
	}
	h.observe(ctx, key, svc, out(t2), "p", rec, "node-a")
	got = drain(rec)
	if len(got) != 2 || !strings.HasPrefix(got[0], "Warning EndpointUnhealthy node node-a: endpoint tcp://10.244.1.6:8080") ||
		!strings.HasPrefix(got[1], "Normal EndpointHealthy node node-a: endpoint tcp://10.244.1.5:8080 passes") {
		t.Fatalf("one out, one back: Events %q", got)
	}

	// A taken-out endpoint that goes away (not registered any more) gets no Event.
	hl := out()
	hl.Targets = []health.Target{t1}
	h.observe(ctx, key, svc, hl, "p", rec, "node-a")
	if got := drain(rec); len(got) != 0 {
		t.Fatalf("t2 gone: Events %q, want none", got)
	}

	// A flapping endpoint: 100 transitions, at most the burst in Events (the bucket refills one per 30 s).
	for i := range 100 {
		if i%2 == 0 {
			h.observe(ctx, key, svc, out(t1), "p", rec, "node-a")
		} else {
			h.observe(ctx, key, svc, out(), "p", rec, "node-a")
		}
	}
	if got := drain(rec); len(got) > EndpointEventBurst {
		t.Errorf("a flapping endpoint made %d Events, want at most %d", len(got), EndpointEventBurst)
	}

	// Without a health check any more: no state, no Events.
	h.observe(ctx, key, svc, desired.Health{}, "", rec, "node-a")
	if got := drain(rec); len(got) != 0 {
		t.Errorf("health check removed: Events %q, want none", got)
	}
}

// BenchmarkObserveWithoutHealthCheck: a sync of a Service no health check covers (nearly all of them) costs
// the health checker a map lookup, not a logger, a set and a key string.
func BenchmarkObserveWithoutHealthCheck(b *testing.B) {
	h := NewHealthChecker(health.Options{}, nil)
	ctx := logf.IntoContext(context.Background(), zap.New(zap.WriteTo(io.Discard)))
	key := types.NamespacedName{Namespace: "ns", Name: "web"}
	svc := &corev1.Service{}
	b.ReportAllocs()
	for b.Loop() {
		h.observe(ctx, key, svc, desired.Health{}, "", nil, "node-a")
	}
}
