package syncer

import (
	"context"
	"errors"
	"fmt"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
	"github.com/ipvs-operator/ipvs-operator/ipvs/plan"
)

// Drift is what CheckDrift found missing from the kernel; NoDrift means nothing.
type Drift string

// What CheckDrift looks for: the ways a node loses everything at once. kube-proxy in nftables mode flushes
// IPVS and deletes its own dummy device at every start (its leftover cleanup); `ipvsadm -C`, a firewall
// reload's `nft flush ruleset` and `ip link del` do the same by hand.
const (
	NoDrift Drift = ""
	// DriftInterface: the dummy interface is gone or down; its VIPs no longer reach IPVS.
	DriftInterface Drift = "interface"
	// DriftTable: the nftables table is gone: no hairpin or non-pod masquerade, no outside guard.
	DriftTable Drift = "nftables"
	// DriftIPVS: a virtual server the agent programmed is gone: the IPVS table was flushed.
	DriftIPVS Drift = "ipvs"
)

// CheckDrift is the cheap canary the agent runs every second or so: it tells, in O(1) kernel reads
// whatever the number of Services, whether the kernel lost what the agent programmed wholesale. It reads
// three things: the dummy interface (exists and is up), the nftables table (exists), and one virtual
// server the agent programmed (still exists). On drift, call Resync. Piecemeal drift (one real server
// deleted by hand, one weight changed) is the periodic Audit's job.
//
// The virtual server probed is one the cache says a Service holds, not a dedicated sentinel: a sentinel
// would need an address of its own that the agent owns (a VIP on the dummy interface, which then accepts
// traffic for it) or one outside the ownership rules (a stranger to Cleanup and to other tools), and an
// object in the kernel that is not a Service. A flush removes every virtual server, so any one of them
// tells; and when the agent holds none, a flush loses nothing. The probe holds that Service's key lock for
// the one read, so a concurrent sync of it cannot be mistaken for drift.
func (s *Syncer) CheckDrift(_ context.Context) (Drift, error) {
	if !s.adopted.Load() {
		return NoDrift, ErrNotAdopted
	}
	s.world.RLock()
	defer s.world.RUnlock()
	d, err := s.checkDrift()
	if d != NoDrift {
		s.metrics.DriftDetected(d)
	}
	return d, err
}

func (s *Syncer) checkDrift() (Drift, error) {
	up, err := s.vips.InterfaceUp()
	if err != nil {
		return NoDrift, fmt.Errorf("sync: drift check: dummy interface: %w", err)
	}
	if !up {
		return DriftInterface, nil
	}
	if s.rules != nil {
		ok, err := s.rules.Exists()
		if err != nil {
			return NoDrift, fmt.Errorf("sync: drift check: nftables table: %w", err)
		}
		if !ok {
			return DriftTable, nil
		}
	}
	key := s.canaryKey()
	if key == "" {
		return NoDrift, nil
	}
	l := s.keyLock(key)
	l.Lock()
	defer l.Unlock()
	s.mu.Lock()
	e := s.entries[key]
	s.mu.Unlock()
	if e == nil || e.dirty || len(e.servers) == 0 {
		return NoDrift, nil // changed since it was picked, or in doubt: another one next time
	}
	k := firstKey(e.servers)
	if _, err := s.ipvs.Service(k); errors.Is(err, ipvs.ErrNotFound) {
		return DriftIPVS, nil
	} else if err != nil {
		return NoDrift, fmt.Errorf("sync: drift check: virtual server %s: %w", k, err)
	}
	return NoDrift, nil
}

// canaryKey returns a Service that holds virtual servers, keeping the same one while it does; "" if none.
func (s *Syncer) canaryKey() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.entries[s.canary]; e != nil && e.counts.servers > 0 {
		return s.canary
	}
	s.canary = ""
	for k, e := range s.entries {
		if e.counts.servers > 0 {
			s.canary = k
			break
		}
	}
	return s.canary
}

func firstKey(m map[ipvs.ServiceKey]*server) ipvs.ServiceKey {
	var first ipvs.ServiceKey
	for k := range m {
		if !first.Address.IsValid() || plan.CompareServiceKeys(k, first) < 0 {
			first = k
		}
	}
	return first
}

// Resync is the repair after drift: a full audit (re-create the interface and table, re-read the kernel,
// re-apply every Service, sweep), run at once. An audit already running is asked to stop, since its
// snapshot may predate the drift, and the resync starts as soon as it has.
func (s *Syncer) Resync(ctx context.Context) error {
	s.preempt.Store(true)
	return s.Audit(ctx)
}
