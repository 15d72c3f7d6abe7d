package syncer

import (
	"net/netip"
	"slices"
	"sync"

	"k8s.io/apimachinery/pkg/util/sets"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
	"github.com/ipvs-operator/ipvs-operator/ipvs/plan"
)

// elementSet is a set of nftables set elements: ClusterIPs, endpoint IPs, and virtual server keys.
type elementSet struct {
	clusterIPs, endpoints sets.Set[netip.Addr]
	ports                 sets.Set[ipvs.ServiceKey]
}

func newElementSet() elementSet {
	return elementSet{clusterIPs: sets.New[netip.Addr](), endpoints: sets.New[netip.Addr](), ports: sets.New[ipvs.ServiceKey]()}
}

func elementSetOf(e ipvs.RuleElements) elementSet {
	return elementSet{clusterIPs: sets.New(e.ClusterIPs...), endpoints: sets.New(e.Endpoints...), ports: sets.New(e.Ports...)}
}

func (e elementSet) len() int { return e.clusterIPs.Len() + e.endpoints.Len() + e.ports.Len() }

// ruleSets tracks the nftables sets: how many Services need each element, and what the kernel holds. An
// element is added when its first Service needs it and removed when its last one stops: an endpoint IP is
// often shared by several Services, and must stay while any of them uses it. (A ClusterIP and its ports
// belong to one Service, the VIP's owner; they are counted the same way.)
type ruleSets struct {
	// mu is held across Rules.Update so that the kernel and the counts change together.
	mu                    sync.Mutex
	clusterIPs, endpoints map[netip.Addr]int
	ports                 map[ipvs.ServiceKey]int
	have                  elementSet
	// touched, while the audit reads the sets, collects every element an Update added or removed (or tried
	// to) meanwhile: the read may predate or follow that update, so for those elements have, not the read,
	// says what the kernel holds.
	touched *elementSet
}

func newRuleSets() ruleSets {
	return ruleSets{clusterIPs: map[netip.Addr]int{}, endpoints: map[netip.Addr]int{}, ports: map[ipvs.ServiceKey]int{}, have: newElementSet()}
}

// contribution is what a Service needs in the sets: its VIPs, the addresses of its real servers, draining
// ones included (their connections still hairpin), and the keys of the virtual servers it holds and still
// wants. A port is open only while its virtual server exists: it joins the set after AddService succeeded
// and leaves it before DeleteService, so a ClusterIP never passes a new connection to the local stack
// (fail closed: in between, a new connection is refused).
func contribution(e *entry, want plan.Desired) elementSet {
	c := newElementSet()
	c.clusterIPs.Insert(e.vips.UnsortedList()...)
	for _, sv := range e.servers {
		for k := range sv.dests {
			c.endpoints.Insert(k.Address)
		}
	}
	for _, w := range want.Servers {
		if _, ok := e.servers[w.ServiceKey]; ok {
			c.ports.Insert(w.ServiceKey)
		}
	}
	return c
}

// wanted is what a Service's desired state will need in the sets once it is programmed, before the
// operations: its ClusterIPs and endpoints. Ports are not in it: they follow the virtual servers.
func wanted(want plan.Desired) elementSet {
	c := newElementSet()
	c.clusterIPs.Insert(want.VIPs...)
	for _, sv := range want.Servers {
		for _, d := range sv.Destinations {
			c.endpoints.Insert(d.Address)
		}
	}
	return c
}

// growElements adds, before any kernel operation, the elements the desired state will need: a new endpoint
// must be in the hairpin set before IPVS sends it traffic, because NAT is decided on a connection's first
// packet and a hairpin connection that starts unmasqueraded stays broken. Removals of ClusterIPs and
// endpoints wait for updateElements, after the operations; the ports of virtual servers about to be deleted
// leave now (see contribution).
func (s *Syncer) growElements(e *entry, want plan.Desired) error {
	if s.rules == nil {
		return nil
	}
	next := contribution(e, want)
	w := wanted(want)
	next.clusterIPs.Insert(w.clusterIPs.UnsortedList()...)
	next.endpoints.Insert(w.endpoints.UnsortedList()...)
	return s.setElements(e, next)
}

// updateElements brings the sets in step with e's contribution, incrementally. On failure nothing changes,
// so the next sync retries the same difference.
func (s *Syncer) updateElements(e *entry, want plan.Desired) error {
	if s.rules == nil {
		return nil
	}
	return s.setElements(e, contribution(e, want))
}

// setElements makes e contribute next to the sets.
func (s *Syncer) setElements(e *entry, next elementSet) error {
	addC, remC := next.clusterIPs.Difference(e.elements.clusterIPs), e.elements.clusterIPs.Difference(next.clusterIPs)
	addE, remE := next.endpoints.Difference(e.elements.endpoints), e.elements.endpoints.Difference(next.endpoints)
	addP, remP := next.ports.Difference(e.elements.ports), e.elements.ports.Difference(next.ports)
	if addC.Len()+remC.Len()+addE.Len()+remE.Len()+addP.Len()+remP.Len() == 0 {
		return nil
	}
	r := &s.elements
	r.mu.Lock()
	defer r.mu.Unlock()
	var add, remove ipvs.RuleElements
	add.ClusterIPs, remove.ClusterIPs = adjust(r.clusterIPs, r.have.clusterIPs, addC, remC)
	add.Endpoints, remove.Endpoints = adjust(r.endpoints, r.have.endpoints, addE, remE)
	add.Ports, remove.Ports = adjust(r.ports, r.have.ports, addP, remP)
	if err := s.applyElements(add, remove); err != nil {
		// Undo the counts: the kernel did not change, and e.elements still says what e contributes.
		adjust(r.clusterIPs, r.have.clusterIPs, remC, addC)
		adjust(r.endpoints, r.have.endpoints, remE, addE)
		adjust(r.ports, r.have.ports, remP, addP)
		return err
	}
	e.elements = next
	return nil
}

// adjust counts inc up and dec down, and returns the elements the kernel must gain and lose.
func adjust[T element](refs map[T]int, have sets.Set[T], inc, dec sets.Set[T]) (add, remove []T) {
	for a := range inc {
		refs[a]++
		if refs[a] == 1 && !have.Has(a) {
			add = append(add, a)
		}
	}
	for a := range dec {
		if refs[a]--; refs[a] <= 0 {
			delete(refs, a)
			if have.Has(a) {
				remove = append(remove, a)
			}
		}
	}
	slices.SortFunc(add, compareElements)
	slices.SortFunc(remove, compareElements)
	return add, remove
}

// element is what the sets hold: an address, or a virtual server's key.
type element interface {
	netip.Addr | ipvs.ServiceKey
}

// compareElements orders elements, so that updates are deterministic.
func compareElements[T element](a, b T) int {
	switch a := any(a).(type) {
	case netip.Addr:
		return a.Compare(any(b).(netip.Addr))
	case ipvs.ServiceKey:
		return plan.CompareServiceKeys(a, any(b).(ipvs.ServiceKey))
	}
	return 0
}

// applyElements calls Rules.Update and records the result in have. Called with s.elements.mu held.
func (s *Syncer) applyElements(add, remove ipvs.RuleElements) error {
	if len(add.ClusterIPs)+len(add.Endpoints)+len(add.Ports)+len(remove.ClusterIPs)+len(remove.Endpoints)+len(remove.Ports) == 0 {
		return nil
	}
	if t := s.elements.touched; t != nil {
		// Even on failure: a batched update may have changed part of the sets.
		t.clusterIPs.Insert(add.ClusterIPs...).Insert(remove.ClusterIPs...)
		t.endpoints.Insert(add.Endpoints...).Insert(remove.Endpoints...)
		t.ports.Insert(add.Ports...).Insert(remove.Ports...)
	}
	if err := s.rules.Update(add, remove); err != nil {
		return err
	}
	h := s.elements.have
	h.clusterIPs.Delete(remove.ClusterIPs...).Insert(add.ClusterIPs...)
	h.endpoints.Delete(remove.Endpoints...).Insert(add.Endpoints...)
	h.ports.Delete(remove.Ports...).Insert(add.Ports...)
	return nil
}

// auditElements re-reads the sets once and puts back the elements a Service needs that someone removed (a
// table deleted and re-created, `nft flush set`). It returns the ClusterIPs the sets hold and how many
// elements were missing. Rules that know nobody else committed anything since the last read
// (ipvs.RulesGeneration) spare it the read.
//
// The read holds no lock: at scale it is long, and the Services' syncs, which update the sets, go on
// meanwhile. It is not read again when they do (a busy node would re-read forever, or hold every sync up
// for a read under the lock): an element an update touched during the read is judged by what the update
// recorded in have, and every other element by the read. So a change programmed during the audit is never
// "repaired" back, and an element someone removed during the audit is repaired by the next one.
func (s *Syncer) auditElements() (sets.Set[netip.Addr], int, error) {
	if s.rules == nil {
		return sets.New[netip.Addr](), 0, nil
	}
	r := &s.elements
	if g, ok := s.rules.(ipvs.RulesGeneration); ok {
		// Only this agent's updates since the last read, all recorded in have: nothing to read or repair,
		// but the elements whose update failed are retried, as after a read.
		if unchanged, err := g.UnchangedSinceElements(); err == nil && unchanged {
			r.mu.Lock()
			defer r.mu.Unlock()
			n, err := s.reconcileElementsLocked(false)
			return r.have.clusterIPs.Clone(), n, err
		}
	}
	touched := newElementSet()
	r.mu.Lock()
	r.touched = &touched
	r.mu.Unlock()
	els, err := s.rules.Elements()
	if err != nil {
		r.mu.Lock()
		r.touched = nil
		r.mu.Unlock()
		return nil, 0, err
	}
	// Built outside the lock; under it, only the touched elements (a handful) are looked at.
	read := elementSetOf(els)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.touched = nil
	trustHave(read.clusterIPs, r.have.clusterIPs, touched.clusterIPs)
	trustHave(read.endpoints, r.have.endpoints, touched.endpoints)
	trustHave(read.ports, r.have.ports, touched.ports)
	r.have = read
	n, err := s.reconcileElementsLocked(false)
	return r.have.clusterIPs.Clone(), n, err
}

// trustHave corrects a read of one set for the touched elements, whose state have knows better than the read.
func trustHave[T comparable](read, have, touched sets.Set[T]) {
	for a := range touched {
		if have.Has(a) {
			read.Insert(a)
		} else {
			read.Delete(a)
		}
	}
}

// reconcileElements makes the kernel's sets hold exactly the counted elements, as far as have knows
// them: the repair of elements someone removed, and, with sweep, removal of elements no Service needs
// (left by a previous agent, or by virtual servers the audit swept). It returns how many elements it
// added or removed.
func (s *Syncer) reconcileElements(sweep bool) (int, error) {
	if s.rules == nil {
		return 0, nil
	}
	s.elements.mu.Lock()
	defer s.elements.mu.Unlock()
	return s.reconcileElementsLocked(sweep)
}

func (s *Syncer) reconcileElementsLocked(sweep bool) (int, error) {
	r := &s.elements
	var add, remove ipvs.RuleElements
	add.ClusterIPs, remove.ClusterIPs = missingAndExtra(r.clusterIPs, r.have.clusterIPs, sweep)
	add.Endpoints, remove.Endpoints = missingAndExtra(r.endpoints, r.have.endpoints, sweep)
	add.Ports, remove.Ports = missingAndExtra(r.ports, r.have.ports, sweep)
	n := len(add.ClusterIPs) + len(add.Endpoints) + len(add.Ports) + len(remove.ClusterIPs) + len(remove.Endpoints) + len(remove.Ports)
	if err := s.applyElements(add, remove); err != nil {
		return 0, err
	}
	return n, nil
}

func missingAndExtra[T element](refs map[T]int, have sets.Set[T], sweep bool) (missing, extra []T) {
	for a := range refs {
		if !have.Has(a) {
			missing = append(missing, a)
		}
	}
	if sweep {
		for a := range have {
			if refs[a] == 0 {
				extra = append(extra, a)
			}
		}
	}
	slices.SortFunc(missing, compareElements)
	slices.SortFunc(extra, compareElements)
	return missing, extra
}
