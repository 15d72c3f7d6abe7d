package agent

import (
	"slices"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"

	lbv1alpha1 "github.com/ipvs-operator/ipvs-operator/api/v1alpha1"
	"github.com/ipvs-operator/ipvs-operator/controllers/agent/desired"
	"github.com/ipvs-operator/ipvs-operator/ipvs"
)

// slowStarts remembers, per Service whose policy has a slow start, its usable real servers and when each
// became usable (desired.Ramps), between translations: that memory is what tells a newly usable endpoint
// from one that has served for long. It holds O(usable real servers) of those Services only, and nothing for
// the others. The weights themselves are a pure function of it and the clock (desired.SlowStart); the
// reconciler re-translates a Service at each step of a ramp under way (RequeueAfter), and only then.
type slowStarts struct {
	// adopted returns the engine's table once it has adopted the kernel's (nil: nothing to resume).
	adopted func() []ipvs.VirtualServer

	mu    sync.Mutex
	ramps map[types.NamespacedName]desired.Ramps
	// seeds are the adopted virtual servers with a weighted scheduler, read at the first slow start after
	// the agent's start and kept for SeedWindow at most: a Service first translated in that time resumes
	// its ramps from the kernel's weights (desired.ResumeRamps) instead of starting at full weight.
	seedOnce  sync.Once
	seeds     map[ipvs.ServiceKey]ipvs.VirtualServer
	seedUntil time.Time
}

func newSlowStarts(adopted func() []ipvs.VirtualServer) *slowStarts {
	return &slowStarts{adopted: adopted, ramps: map[types.NamespacedName]desired.Ramps{}}
}

// apply weighs a Service's State for a slow start of window at now and returns it with the time until the
// next step of a ramp under way (0: none). The lock is held throughout: the start-up pass and the controller
// may translate the same Service at once, and the second must see what the first remembered (the seeds are
// read once). Weighing is O(the Service's real servers) and cheap next to the translation.
func (s *slowStarts) apply(key types.NamespacedName, st desired.State, window time.Duration, now time.Time) (desired.State, time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	prev, ok := s.ramps[key]
	if !ok {
		prev = s.resumeLocked(st, window, now)
	} else if s.seeds != nil && now.After(s.seedUntil) {
		s.seeds = nil // past the seed window: free what no Service claimed
	}
	out, ramps, recheck := desired.SlowStart(st, window, prev, now)
	s.ramps[key] = ramps
	return out, recheck
}

// forget drops a Service that has no slow start (any more) or is gone.
func (s *slowStarts) forget(key types.NamespacedName) {
	s.mu.Lock()
	delete(s.ramps, key)
	s.mu.Unlock()
}

// resumeLocked returns the Ramps a restarted agent resumes for a Service it has not translated yet: from the
// kernel's weights of its virtual servers, as adopted, during SeedWindow after the first slow start;
// none afterwards (a Service whose policy gains a slow start later starts at full weight).
func (s *slowStarts) resumeLocked(st desired.State, window time.Duration, now time.Time) desired.Ramps {
	if s.adopted == nil {
		return nil
	}
	s.seedOnce.Do(func() {
		s.seedUntil = now.Add(SeedWindow)
		s.seeds = map[ipvs.ServiceKey]ipvs.VirtualServer{}
		for _, vs := range s.adopted() {
			if slices.Contains(lbv1alpha1.WeightedSchedulers, lbv1alpha1.Scheduler(vs.Scheduler)) {
				s.seeds[vs.ServiceKey] = vs
			}
		}
	})
	if s.seeds == nil {
		return nil
	}
	if now.After(s.seedUntil) {
		s.seeds = nil // free them
		return nil
	}
	var have []ipvs.VirtualServer
	for _, vs := range st.Servers {
		if a, ok := s.seeds[vs.ServiceKey]; ok {
			have = append(have, a)
			delete(s.seeds, vs.ServiceKey) // read once: the next translations use the Service's own Ramps
		}
	}
	return desired.ResumeRamps(have, window, now)
}
