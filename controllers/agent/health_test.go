package agent

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"k8s.io/apimachinery/pkg/types"

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
