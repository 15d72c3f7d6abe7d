package desired

import (
	"time"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
)

// Slow start weights. A Service without slow start keeps weight 1 for every usable real server (nothing to
// weigh, and the weight `ipvsadm -Ln` users expect); one with slow start weighs them SlowStartFullWeight, so
// that a ramp has room for its steps.
const (
	// SlowStartFullWeight is the weight of a usable real server of a Service with slow start, once its
	// ramp is over.
	SlowStartFullWeight = 100
	// SlowStartSteps is how many steps a ramp takes: the weight starts at SlowStartFullWeight/SlowStartSteps
	// and rises by as much at each step, so a ramp costs at most SlowStartSteps weight updates per real
	// server, whatever its window.
	SlowStartSteps = 10
)

// Ramps remembers the usable real servers of one Service's virtual servers and when each became usable; the
// zero time means its ramp is over (or it never had one). A virtual server absent from Ramps is new, and one
// with no usable real server had nothing to ramp against: their real servers start at full weight together (as HAProxy never slow-starts servers at its own start; equal
// weights would mean no ramp anyway).
type Ramps map[ipvs.ServiceKey]map[ipvs.DestinationKey]time.Time

// RampWeight is the weight of a real server that became usable elapsed ago, in a ramp of window: it follows
// elapsed/window in steps of a tenth (SlowStartSteps), never below the first step, so the weight is
// SlowStartFullWeight/10 for the first fifth of the window, then 20, 30 ... 90, and full once the window has
// passed (a floor of a tenth, as Envoy's default min_weight_percent, so a new pod gets some traffic at once).
// next is the time until the next step, 0 once the weight is full.
func RampWeight(elapsed, window time.Duration) (weight int, next time.Duration) {
	if window <= 0 || elapsed >= window {
		return SlowStartFullWeight, 0
	}
	elapsed = max(elapsed, 0)
	// Integer arithmetic on nanoseconds: window*SlowStartSteps fits in an int64 for windows up to ~29 years.
	k := max(int64(elapsed)*SlowStartSteps/int64(window), 1)
	if k >= SlowStartSteps {
		return SlowStartFullWeight, 0
	}
	nextStart := time.Duration((k + 1) * int64(window) / SlowStartSteps)
	return int(k) * SlowStartFullWeight / SlowStartSteps, nextStart - elapsed
}

// rampElapsed is the inverse of RampWeight: the elapsed time at the start of the step of weight w, and
// false when w is not a weight a ramp sets below full (0, full, or a weight of another regime, such as the
// 1 of a Service without slow start).
func rampElapsed(w int, window time.Duration) (time.Duration, bool) {
	const step = SlowStartFullWeight / SlowStartSteps
	if w <= 0 || w >= SlowStartFullWeight || w%step != 0 {
		return 0, false
	}
	k := int64(w / step)
	if k == 1 {
		return 0, true
	}
	return time.Duration(k * int64(window) / SlowStartSteps), true
}

// SlowStart weighs st's usable real servers (weight > 0) for a slow start of window, given what prev
// remembered of the Service at its previous translation, at now: a real server already usable then keeps
// ramping, or has full weight; one that was not (new, newly Ready, back from a failed health check or
// from panic mode) starts a ramp now. Real servers at weight 0 (quiesced by the health check) are not
// usable and are forgotten, so they ramp again when they come back, as HAProxy and NGINX Plus ramp a
// server back from a failed health check. The weight is a pure function of the time since the real server became
// usable, so an edited window applies to ramps under way.
//
// It returns the weighed State (st is not modified), what to remember for the next translation, and the time
// until the next step of a ramp under way (0: none; no timer is needed).
func SlowStart(st State, window time.Duration, prev Ramps, now time.Time) (State, Ramps, time.Duration) {
	out := st
	out.Servers = make([]ipvs.VirtualServer, len(st.Servers))
	ramps := make(Ramps, len(st.Servers))
	var recheck time.Duration
	for i, vs := range st.Servers {
		was, known := prev[vs.ServiceKey]
		usable := make(map[ipvs.DestinationKey]time.Time, len(vs.Destinations))
		dests := make([]ipvs.Destination, len(vs.Destinations))
		for j, d := range vs.Destinations {
			dests[j] = d
			if d.Weight <= 0 {
				continue
			}
			since, had := was[d.DestinationKey]
			// A real server ramps against the others already serving: when none was (a new virtual server,
			// or one whose endpoints were all gone), the ones that come start at full weight together.
			if known && !had && len(was) > 0 {
				since = now
			}
			dests[j].Weight = SlowStartFullWeight
			if !since.IsZero() {
				w, next := RampWeight(now.Sub(since), window)
				dests[j].Weight = w
				if next == 0 {
					since = time.Time{}
				} else if recheck == 0 || next < recheck {
					recheck = next
				}
			}
			usable[d.DestinationKey] = since
		}
		out.Servers[i] = ipvs.VirtualServer{Service: vs.Service, Destinations: dests}
		ramps[vs.ServiceKey] = usable
	}
	return out, ramps, recheck
}

// ResumeRamps rebuilds, for a restarted agent, what the previous agent's Ramps were from the kernel's
// weights (its adopted virtual servers): a real server at a ramp weight below full continues its ramp from
// the start of that step (so it never goes back, and finishes at most one step late); any other non-zero
// weight is full (no ramp again after a restart: the endpoints did not change); weight 0 is not usable (it
// ramps if it is usable now).
func ResumeRamps(have []ipvs.VirtualServer, window time.Duration, now time.Time) Ramps {
	out := make(Ramps, len(have))
	for _, vs := range have {
		usable := make(map[ipvs.DestinationKey]time.Time, len(vs.Destinations))
		for _, d := range vs.Destinations {
			if d.Weight <= 0 {
				continue
			}
			var since time.Time
			if elapsed, ok := rampElapsed(d.Weight, window); ok {
				since = now.Add(-elapsed)
			}
			usable[d.DestinationKey] = since
		}
		out[vs.ServiceKey] = usable
	}
	return out
}
