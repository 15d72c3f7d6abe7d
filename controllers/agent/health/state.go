package health

// State is a target's verdict and the run of results that may change it. The zero State is healthy: a new
// target trusts readiness until it fails UnhealthyThreshold probes in a row (as Seesaw and Envoy count
// rise/fall), so an agent restart does not take endpoints out before probing them.
type State struct {
	Unhealthy bool
	// Run is how many probes in a row went against the verdict: failures while healthy, successes while
	// unhealthy.
	Run int32
}

// Observe records one probe result and reports whether the verdict changed. A threshold below 1 counts as
// 1.
func (s State) Observe(ok bool, unhealthyThreshold, healthyThreshold int32) (State, bool) {
	against := ok == s.Unhealthy // a success while unhealthy, a failure while healthy
	if !against {
		return State{Unhealthy: s.Unhealthy}, false
	}
	threshold := unhealthyThreshold
	if s.Unhealthy {
		threshold = healthyThreshold
	}
	if s.Run+1 >= max(threshold, 1) {
		return State{Unhealthy: !s.Unhealthy}, true
	}
	return State{Unhealthy: s.Unhealthy, Run: s.Run + 1}, false
}
