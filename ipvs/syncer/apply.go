package syncer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/util/sets"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
	"github.com/ipvs-operator/ipvs-operator/ipvs/plan"
)

// applier runs one Service's plan against the kernel and keeps the entry's cache equal to what the kernel
// did. Called with the entry's key lock held (or world held exclusively).
type applier struct {
	s   *Syncer
	e   *entry
	log logr.Logger
	now time.Time

	ops  int
	errs []error
	// replan is set when the kernel surprised the cache (a virtual server already there, or gone): the
	// cache now says what the kernel has, and a second plan finishes the job in the same call.
	replan bool
	// notAdded are virtual servers whose creation failed: their real-server ops would fail too.
	notAdded sets.Set[ipvs.ServiceKey]
	// keepOld are virtual servers where adding or restoring a real server failed: their stale real servers
	// stay in service this round, so a failed add never leaves a virtual server with fewer real servers.
	keepOld sets.Set[ipvs.ServiceKey]
	// inSets, when not nil, is all the nftables sets are known to hold for this Service because adding its
	// new elements failed: an op that would route to anything else is held back (fail closed), and counts
	// as a failed add for the ops that depend on it.
	inSets *elementSet
	// done holds the outcomes of the additions prefetch made in one batch, which exec takes instead of
	// calling the kernel.
	done map[opID]error
}

// opID identifies an addition of a plan.
type opID struct {
	kind plan.Kind
	svc  ipvs.ServiceKey
	dst  ipvs.DestinationKey
}

func idOf(op plan.Op) opID {
	return opID{kind: op.Kind, svc: op.Service.ServiceKey, dst: op.Destination.DestinationKey}
}

// prefetch makes the additions that ops starts with (a new virtual server and its real servers) in one
// batch (ipvs.Batcher), in the order run would make them; run then takes their outcomes as it reaches
// them, and handles each as if it had made the call itself (an existing virtual server is taken over, a
// failed one's real servers are skipped: the batch made them too, and they failed with it). It only pays
// off when a Service is created, so the engine uses it for a cold start's Services.
func (a *applier) prefetch(ops []plan.Op) {
	b, ok := a.s.ipvs.(ipvs.Batcher)
	if !ok || a.inSets != nil {
		return
	}
	var adds []ipvs.Addition
	for _, op := range ops {
		switch op.Kind {
		case plan.AddService:
			adds = append(adds, ipvs.Addition{Op: ipvs.OpAddService, Service: op.Service})
		case plan.AddDestination:
			adds = append(adds, ipvs.Addition{Op: ipvs.OpAddDestination, Service: op.Service, Destination: op.Destination})
		}
		if op.Kind != plan.AddService && op.Kind != plan.AddDestination {
			break
		}
	}
	if len(adds) < 2 {
		return
	}
	errs := b.Batch(adds)
	a.done = make(map[opID]error, len(adds))
	for i, op := range ops[:len(adds)] {
		a.done[idOf(op)] = errs[i]
	}
}

func (s *Syncer) newApplier(ctx context.Context, e *entry, now time.Time) *applier {
	return &applier{s: s, e: e, log: logr.FromContextOrDiscard(ctx), now: now}
}

// mark inserts k into *set, creating it on first use: most syncs fail nothing.
func mark(set *sets.Set[ipvs.ServiceKey], k ipvs.ServiceKey) {
	if *set == nil {
		*set = sets.New[ipvs.ServiceKey]()
	}
	set.Insert(k)
}

// run applies ops in order. It goes on after a failure (one real server's error must not hold back the
// rest of the Service), except where the safe order says an op depends on a failed one.
func (a *applier) run(ctx context.Context, ops []plan.Op) {
	for _, op := range ops {
		if err := ctx.Err(); err != nil {
			a.errs = append(a.errs, err)
			return
		}
		a.apply(op)
	}
}

//nolint:gocyclo // one flat switch over the op kinds; each case is short and reads best beside the others
func (a *applier) apply(op plan.Op) {
	k := op.Service.ServiceKey
	if a.heldBack(op) {
		switch op.Kind {
		case plan.AddService:
			mark(&a.notAdded, k)
		case plan.AddDestination, plan.UpdateDestination:
			mark(&a.keepOld, k)
		}
		return
	}
	switch op.Kind {
	case plan.BindVIP:
		if !serversOn(a.e.servers, op.VIP) {
			// Its virtual servers could not be created (the error is recorded): a bound VIP would pass
			// every packet to the local stack. The next sync binds it once one exists.
			return
		}
		if a.fail(a.exec(op)) {
			return
		}
		a.s.mu.Lock()
		a.s.bound.Insert(op.VIP)
		a.s.mu.Unlock()

	case plan.UnbindVIP:
		if serversOn(a.e.servers, op.VIP) {
			return // a virtual server on it could not be deleted: keep the VIP, and with it the ownership
		}
		if a.fail(a.exec(op)) {
			return
		}
		// Ownership stays: the VIP may still be desired (with no virtual server left); release gives up
		// the ones that are not.
		a.s.mu.Lock()
		a.s.bound.Delete(op.VIP)
		a.s.mu.Unlock()

	case plan.AddService:
		err := a.exec(op)
		existed := errors.Is(err, ipvs.ErrExists)
		if existed {
			// Someone made it (or a failed sync did): take it over, then learn its real servers.
			err = a.exec(plan.Op{Kind: plan.UpdateService, Service: op.Service})
		}
		if a.fail(err) {
			mark(&a.notAdded, k)
			return
		}
		sv := newServer(op.Service)
		a.e.servers[k] = sv
		if existed {
			a.replan = true
			if obs, err := a.s.ipvs.Destinations(k); err == nil {
				sv.setObserved(obs, a.now)
			} else {
				a.fail(err)
			}
		}

	case plan.UpdateService:
		err := a.exec(op)
		if errors.Is(err, ipvs.ErrNotFound) {
			// Gone behind our back: create it again; the second plan adds its real servers.
			delete(a.e.servers, k)
			a.replan = true
			err = a.exec(plan.Op{Kind: plan.AddService, Service: op.Service})
			if err == nil {
				a.e.servers[k] = newServer(op.Service)
			}
		}
		if a.fail(err) {
			return
		}
		if sv := a.e.servers[k]; sv != nil {
			sv.svc = op.Service
		}

	case plan.DeleteService:
		if err := a.exec(op); !errors.Is(err, ipvs.ErrNotFound) && a.fail(err) {
			return
		}
		delete(a.e.servers, k)

	case plan.AddDestination:
		if a.notAdded.Has(k) {
			return
		}
		err := a.exec(op)
		if errors.Is(err, ipvs.ErrExists) {
			err = a.exec(plan.Op{Kind: plan.UpdateDestination, Service: op.Service, Destination: op.Destination})
		}
		if a.fail(err) {
			mark(&a.keepOld, k)
			return
		}
		a.setDest(k, op.Destination)

	case plan.UpdateDestination:
		restore := op.Destination.Weight > 0
		if !restore && a.keepOld.Has(k) {
			return
		}
		err := a.exec(op)
		if errors.Is(err, ipvs.ErrNotFound) {
			if !restore {
				a.deleteDest(k, op.Destination.DestinationKey) // nothing left to drain
				return
			}
			err = a.exec(plan.Op{Kind: plan.AddDestination, Service: op.Service, Destination: op.Destination})
		}
		if a.fail(err) {
			if restore {
				mark(&a.keepOld, k)
			}
			return
		}
		a.setDest(k, op.Destination)

	case plan.DeleteDestination:
		if a.keepOld.Has(k) {
			return
		}
		if err := a.exec(op); !errors.Is(err, ipvs.ErrNotFound) && a.fail(err) {
			return
		}
		a.deleteDest(k, op.Destination.DestinationKey)
	}
}

// heldBack reports whether op would make the kernel route to an address whose nftables elements are
// missing: binding a VIP or creating a virtual server on a ClusterIP not in the ClusterIP set, adding or
// restoring a real server not in the hairpin set.
func (a *applier) heldBack(op plan.Op) bool {
	if a.inSets == nil {
		return false
	}
	switch op.Kind {
	case plan.BindVIP:
		return !a.inSets.clusterIPs.Has(op.VIP)
	case plan.AddService:
		return !a.inSets.clusterIPs.Has(op.Service.Address)
	case plan.AddDestination:
		return !a.inSets.endpoints.Has(op.Destination.Address)
	case plan.UpdateDestination:
		return op.Destination.Weight > 0 && !a.inSets.endpoints.Has(op.Destination.Address)
	}
	return false
}

// exec makes one kernel call for op, counts it and reports it.
func (a *applier) exec(op plan.Op) error {
	a.ops++
	if err, ok := a.done[idOf(op)]; ok {
		delete(a.done, idOf(op))
		return a.s.reportOp(a.log, a.e.key, op, err)
	}
	return a.s.execOp(a.log, a.e.key, op)
}

// fail records err, if any, and says whether there was one.
func (a *applier) fail(err error) bool {
	if err == nil {
		return false
	}
	a.errs = append(a.errs, err)
	return true
}

func (a *applier) setDest(k ipvs.ServiceKey, d ipvs.Destination) {
	sv := a.e.servers[k]
	if sv == nil {
		return // not ours in the cache: the entry is dirty and will be re-read
	}
	cur := sv.dests[d.DestinationKey]
	if cur == nil {
		cur = &dest{}
		sv.dests[d.DestinationKey] = cur
	}
	cur.Destination = d
	switch {
	case d.Weight > 0:
		cur.drainingSince = time.Time{}
	case cur.drainingSince.IsZero():
		cur.drainingSince = a.now
	}
}

func (a *applier) deleteDest(k ipvs.ServiceKey, dk ipvs.DestinationKey) {
	if sv := a.e.servers[k]; sv != nil {
		delete(sv.dests, dk)
	}
}

// kernelCall maps an op to its kernel verb.
func (s *Syncer) kernelCall(op plan.Op) error {
	k := op.Service.ServiceKey
	switch op.Kind {
	case plan.BindVIP:
		if err, ok := s.takePrebound(op.VIP); ok {
			return err
		}
		return s.vips.Bind(op.VIP)
	case plan.UnbindVIP:
		return s.vips.Unbind(op.VIP)
	case plan.AddService:
		return s.ipvs.AddService(op.Service)
	case plan.UpdateService:
		return s.ipvs.UpdateService(op.Service)
	case plan.DeleteService:
		return s.ipvs.DeleteService(k)
	case plan.AddDestination:
		return s.ipvs.AddDestination(k, op.Destination)
	case plan.UpdateDestination:
		return s.ipvs.UpdateDestination(k, op.Destination)
	case plan.DeleteDestination:
		return s.ipvs.DeleteDestination(k, op.Destination.DestinationKey)
	}
	return fmt.Errorf("sync: unknown op kind %v", op.Kind)
}
