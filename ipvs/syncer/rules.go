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

// appliedElements is what one Service contributes to the sets as last committed, as sorted slices: a
// Service holds a handful of elements, and three maps for them in every entry were about 8 MB of the live
// heap at 10,000 Services (a map costs its group of eight slots however few it holds). The maps are built
// only for the moment a sync compares them (set).
type appliedElements struct {
	clusterIPs, endpoints []netip.Addr
	ports                 []ipvs.ServiceKey
}

func (a appliedElements) len() int { return len(a.clusterIPs) + len(a.endpoints) + len(a.ports) }

func (a appliedElements) set() elementSet {
	return elementSet{clusterIPs: sets.New(a.clusterIPs...), endpoints: sets.New(a.endpoints...), ports: sets.New(a.ports...)}
}

// compactElements is e as appliedElements, nil slices where a set is empty.
func compactElements(e elementSet) appliedElements {
	var a appliedElements
	if e.clusterIPs.Len() > 0 {
		a.clusterIPs = sortedAddrs(e.clusterIPs.UnsortedList())
	}
	if e.endpoints.Len() > 0 {
		a.endpoints = sortedAddrs(e.endpoints.UnsortedList())
	}
	if e.ports.Len() > 0 {
		a.ports = e.ports.UnsortedList()
		slices.SortFunc(a.ports, plan.CompareServiceKeys)
	}
	return a
}

// ruleSets tracks the nftables sets: how many Services need each element, and what the kernel holds. An
// element is added when its first Service needs it and removed when its last one stops: an endpoint IP is
// often shared by several Services, and must stay while any of them uses it. (A ClusterIP and its ports
// belong to one Service, the VIP's owner; they are counted the same way.)
type ruleSets struct {
	// mu is held across Rules.Update so that the kernel and the counts change together.
	mu sync.Mutex
	// queue holds the changes of Services waiting for the next Rules.Update (see setElements); queueMu
	// guards it and is never held across I/O.
	queueMu               sync.Mutex
	queue                 []*elementChange
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

// setElements makes e contribute next to the sets. Concurrent calls share one Rules.Update (a group
// commit): a call queues its change and takes the sets' lock; if a call that held the lock meanwhile
// committed the change with its own, it is done, else it commits every change queued so far. One
// nftables transaction costs about as much as the IPVS calls of a whole Service; with the agent's
// workers syncing Services at once (a cold start, a burst), they commit together. A change that fails in a
// batch is committed again alone, so one Service's failure never fails another's sync.
func (s *Syncer) setElements(e *entry, next elementSet) error {
	c := newElementChange(e, next)
	if c.addC.Len()+c.remC.Len()+c.addE.Len()+c.remE.Len()+c.addP.Len()+c.remP.Len() == 0 {
		return nil
	}
	r := &s.elements
	r.queueMu.Lock()
	r.queue = append(r.queue, c)
	r.queueMu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	if c.done {
		return c.err
	}
	r.queueMu.Lock()
	batch := r.queue
	r.queue = nil
	r.queueMu.Unlock()
	if err := s.commitLocked(batch); err != nil && len(batch) > 1 {
		for _, b := range batch {
			b.err = s.commitLocked([]*elementChange{b})
		}
	}
	return c.err
}

// newElementChange is the change that makes e contribute next instead of what it last committed.
func newElementChange(e *entry, next elementSet) *elementChange {
	cur := e.elements.set()
	c := &elementChange{e: e, next: next}
	c.addC, c.remC = next.clusterIPs.Difference(cur.clusterIPs), cur.clusterIPs.Difference(next.clusterIPs)
	c.addE, c.remE = next.endpoints.Difference(cur.endpoints), cur.endpoints.Difference(next.endpoints)
	c.addP, c.remP = next.ports.Difference(cur.ports), cur.ports.Difference(next.ports)
	return c
}

// elementChange is one Service's queued change to the sets (see setElements).
type elementChange struct {
	e          *entry
	next       elementSet
	addC, remC sets.Set[netip.Addr]
	addE, remE sets.Set[netip.Addr]
	addP, remP sets.Set[ipvs.ServiceKey]
	// done and err are set, under the sets' lock, by the call that committed it.
	done bool
	err  error
}

// commitLocked counts the changes and applies their net effect on the sets in one Rules.Update. On
// failure the counts are undone and every change keeps its entry's elements (the next sync retries); on
// success each entry contributes its next elements. The owner of each entry is waiting in setElements,
// with the entry's key lock held. Called with s.elements.mu held.
func (s *Syncer) commitLocked(batch []*elementChange) error {
	r := &s.elements
	touchedC, touchedE, touchedP := sets.New[netip.Addr](), sets.New[netip.Addr](), sets.New[ipvs.ServiceKey]()
	for _, c := range batch {
		count(r.clusterIPs, c.addC, c.remC)
		count(r.endpoints, c.addE, c.remE)
		count(r.ports, c.addP, c.remP)
		touchedC.Insert(c.addC.UnsortedList()...).Insert(c.remC.UnsortedList()...)
		touchedE.Insert(c.addE.UnsortedList()...).Insert(c.remE.UnsortedList()...)
		touchedP.Insert(c.addP.UnsortedList()...).Insert(c.remP.UnsortedList()...)
	}
	var add, remove ipvs.RuleElements
	add.ClusterIPs, remove.ClusterIPs = netChange(r.clusterIPs, r.have.clusterIPs, touchedC)
	add.Endpoints, remove.Endpoints = netChange(r.endpoints, r.have.endpoints, touchedE)
	add.Ports, remove.Ports = netChange(r.ports, r.have.ports, touchedP)
	err := s.applyElements(add, remove)
	for _, c := range batch {
		if err != nil {
			// Undo the counts: the kernel did not change, and e.elements still says what e contributes.
			count(r.clusterIPs, c.remC, c.addC)
			count(r.endpoints, c.remE, c.addE)
			count(r.ports, c.remP, c.addP)
		} else {
			c.e.elements = compactElements(c.next)
		}
		c.done, c.err = true, err
	}
	return err
}

// netChange is what the kernel must gain and lose among the touched elements so that it holds exactly the
// counted ones: the net effect of several Services' changes, one of which may add what another removes.
func netChange[T element](refs map[T]int, have, touched sets.Set[T]) (add, remove []T) {
	for a := range touched {
		switch want := refs[a] > 0; {
		case want && !have.Has(a):
			add = append(add, a)
		case !want && have.Has(a):
			remove = append(remove, a)
		}
	}
	slices.SortFunc(add, compareElements)
	slices.SortFunc(remove, compareElements)
	return add, remove
}

// count counts inc up and dec down; an element no Service counts any more is dropped.
func count[T element](refs map[T]int, inc, dec sets.Set[T]) {
	for a := range inc {
		refs[a]++
	}
	for a := range dec {
		if refs[a]--; refs[a] <= 0 {
			delete(refs, a)
		}
	}
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
