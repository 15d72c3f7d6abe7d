package syncer

import (
	"context"
	"net/netip"
	"slices"
	"time"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
	"github.com/ipvs-operator/ipvs-operator/ipvs/plan"
)

// Retain keeps what the kernel holds for the Service key as it is, for a Service whose desired state cannot
// be computed (an object the translation refuses). A healthy data path must not be torn down because of one
// bad object, so:
//   - if the Service was synced before, its last desired state stays in force (Audit keeps re-applying it);
//   - otherwise (typically right after a restart) the virtual servers adopted on its VIPs are claimed as
//     they are, so the Audit sweep does not remove them as unclaimed.
//
// It makes no kernel change of its own except, for a claimed Service, finishing drains already under way.
func (s *Syncer) Retain(ctx context.Context, key string, vips []netip.Addr) (Result, error) {
	if !s.adopted.Load() {
		return Result{}, ErrNotAdopted
	}
	s.world.RLock()
	defer s.world.RUnlock()
	l := s.keyLock(key)
	l.Lock()
	defer l.Unlock()

	s.mu.Lock()
	if _, known := s.entries[key]; known {
		s.mu.Unlock()
		return Result{}, nil
	}
	var want plan.Desired
	for _, v := range vips {
		svs, ok := s.orphans[v]
		if !ok {
			continue
		}
		want.VIPs = append(want.VIPs, v)
		for _, sv := range svs {
			vs := ipvs.VirtualServer{Service: sv.svc}
			for _, d := range sv.dests {
				if d.Weight > 0 { // real servers already at weight 0 keep draining
					vs.Destinations = append(vs.Destinations, d.Destination)
				}
			}
			slices.SortFunc(vs.Destinations, func(a, b ipvs.Destination) int {
				return plan.CompareDestinationKeys(a.DestinationKey, b.DestinationKey)
			})
			want.Servers = append(want.Servers, vs)
		}
	}
	s.mu.Unlock()
	if want.IsZero() {
		return Result{}, nil
	}
	slices.SortFunc(want.VIPs, func(a, b netip.Addr) int { return a.Compare(b) })
	slices.SortFunc(want.Servers, func(a, b ipvs.VirtualServer) int {
		return plan.CompareServiceKeys(a.ServiceKey, b.ServiceKey)
	})
	want.DrainTimeout = DefaultRetainDrainTimeout
	return s.syncLocked(ctx, key, want)
}

// DefaultRetainDrainTimeout bounds drains already under way on a retained Service, whose policy is unknown:
// the API's default drain timeout.
const DefaultRetainDrainTimeout = 30 * time.Second
