package agent

import (
	"net/netip"
	"testing"
	"time"

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
