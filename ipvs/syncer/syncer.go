// Package syncer is the agent's engine: it keeps this node's IPVS table, the VIPs on the dummy interface and
// the nftables sets in step with the desired state of each Service, one Service at a time.
//
// It keeps a cached model of what the kernel holds for each Service, so a change costs kernel work in
// proportion to that Service only: the plan (package plan) is computed against the cache, not a dump. The
// only reads on the hot path are of the one virtual server whose real servers are being retired (their
// connection counts decide between draining and deleting). CheckDrift, a canary of O(1) reads run every
// second, notices when the kernel lost everything at once (a flushed IPVS table, a deleted dummy interface or
// nftables table) and Resync rebuilds it; a periodic Audit re-reads everything and repairs piecemeal drift,
// Service by Service, without stopping the other syncs. What the agent owns is exactly the virtual servers on
// its VIPs; anything else in the table is never touched.
package syncer

import (
	"context"
	"hash/fnv"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/utils/clock"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
)

// Options tune a Syncer. The zero value is usable.
type Options struct {
	// PodCIDRs are passed to Rules.Ensure by Adopt and Audit; SetPodCIDRs changes them later.
	PodCIDRs []netip.Prefix
	// DrainPollInterval is how often, at most, SyncService asks to be called again while TCP real servers
	// drain with connections, to delete them as soon as their connections end rather than at the deadline.
	// Zero means DefaultDrainPollInterval.
	DrainPollInterval time.Duration
	// Metrics receives counters and gauges; nil means none.
	Metrics Metrics
	// BatchColdStart, when Adopt finds none of the agent's state in the kernel (a cold start), makes
	// SyncService leave the nftables elements and the VIP binds of the Services it programs to the first
	// Audit, which commits the elements of all of them in a few large transactions and then binds their
	// VIPs (see finishColdStart). Until then no VIP is bound, so no client reaches a virtual server whose
	// elements are missing. Off, every SyncService programs its Service completely.
	BatchColdStart bool
}

// DefaultDrainPollInterval is the default Options.DrainPollInterval. A drain costs one read of one virtual
// server's real servers per poll.
const DefaultDrainPollInterval = 5 * time.Second

// Result is what SyncService did.
type Result struct {
	// Ops is the number of kernel operations made (IPVS and VIP changes; reads and nftables updates are
	// not counted). 0 means the kernel already matched.
	Ops int
	// RequeueAfter, if not 0, is when SyncService should be called again for this Service with its current
	// desired state: a real server is draining.
	RequeueAfter time.Duration
}

// Syncer programs the kernel for many Services. It is safe for concurrent use: SyncService calls for
// different Services run in parallel, also with CheckDrift and Audit; Adopt and Cleanup run alone.
type Syncer struct {
	ipvs    ipvs.Interface
	vips    ipvs.VIPs
	rules   ipvs.Rules // nil: no nftables sets to keep
	clock   clock.PassiveClock
	metrics Metrics
	poll    time.Duration

	// world is held shared by SyncService, CheckDrift and Audit (which repairs Service by Service under
	// each Service's key lock), and exclusively by Adopt and Cleanup, which rebuild or drop the whole cache.
	world sync.RWMutex
	// auditMu makes audits run one at a time; preempt asks a running one to stop early, because a resync
	// after drift is waiting and the running audit's snapshot may predate the drift.
	auditMu sync.Mutex
	preempt atomic.Bool
	// keyLocks serialise SyncService calls for one Service (striped: no per-key lifetime to manage).
	keyLocks [64]sync.Mutex
	adopted  atomic.Bool
	// batchCold is Options.BatchColdStart; cold is set by Adopt when it found the kernel empty of the agent's
	// state and batchCold is set, and cleared by the first Audit (finishColdStart).
	batchCold bool
	cold      atomic.Bool

	// mu guards the shared maps below; it is held briefly, never during kernel I/O. A Service's entry is
	// guarded by its key lock (or world held exclusively).
	mu       sync.Mutex
	podCIDRs []netip.Prefix
	entries  map[string]*entry
	// vipOwner says which Service owns each VIP: it alone binds, unbinds and programs virtual servers on it.
	vipOwner map[netip.Addr]string
	// bound is the cache of the addresses on the dummy interface.
	bound sets.Set[netip.Addr]
	// orphans are adopted virtual servers on VIPs no Service has claimed yet, by VIP.
	orphans map[netip.Addr]map[ipvs.ServiceKey]*server
	// totals are the gauges: every entry's counts plus the orphans'.
	totals counts
	// gen is the last entry generation handed out (see entry.gen).
	gen uint64
	// canary is the Service whose virtual servers CheckDrift probes, while it has some.
	canary string
	// deferred are the Services whose elements and binds a cold start left to finishColdStart.
	deferred sets.Set[string]
	// prebound, while finishColdStart runs, holds the outcome of the binds it made in batches ahead of the
	// Services' syncs, which take them instead of binding (see takePrebound).
	prebound map[netip.Addr]error

	// elements tracks the nftables sets; it has its own lock, held across Rules.Update.
	elements ruleSets
}

// New returns a Syncer over the kernel's IPVS table, the dummy interface's VIPs and the nftables sets
// (rules may be nil). Call Adopt before anything else.
func New(ipvsIface ipvs.Interface, vips ipvs.VIPs, rules ipvs.Rules, clk clock.PassiveClock, opts Options) *Syncer {
	s := &Syncer{
		ipvs:      ipvsIface,
		vips:      vips,
		rules:     rules,
		clock:     clk,
		metrics:   opts.Metrics,
		poll:      opts.DrainPollInterval,
		podCIDRs:  opts.PodCIDRs,
		entries:   map[string]*entry{},
		vipOwner:  map[netip.Addr]string{},
		bound:     sets.New[netip.Addr](),
		orphans:   map[netip.Addr]map[ipvs.ServiceKey]*server{},
		elements:  newRuleSets(),
		deferred:  sets.New[string](),
		batchCold: opts.BatchColdStart,
	}
	if s.metrics == nil {
		s.metrics = nopMetrics{}
	}
	if s.poll <= 0 {
		s.poll = DefaultDrainPollInterval
	}
	return s
}

func (s *Syncer) keyLock(key string) *sync.Mutex {
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	return &s.keyLocks[h.Sum32()%uint32(len(s.keyLocks))]
}

// SetPodCIDRs sets the pod CIDRs of the nftables rules (which sources are pods) and applies them now.
func (s *Syncer) SetPodCIDRs(_ context.Context, cidrs []netip.Prefix) error {
	s.world.RLock()
	defer s.world.RUnlock()
	s.mu.Lock()
	s.podCIDRs = append([]netip.Prefix(nil), cidrs...)
	s.mu.Unlock()
	if s.rules == nil {
		return nil
	}
	return s.rules.Ensure(cidrs)
}
