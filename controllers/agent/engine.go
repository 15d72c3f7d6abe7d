package agent

import (
	"context"
	"net/netip"
	"time"

	"github.com/ipvs-operator/ipvs-operator/controllers/agent/desired"
)

// Engine is what the controllers need of the sync engine (ipvs/sync.Syncer implements it). It is an interface
// so the controllers can be tested against a recording engine, and the engine against a fake kernel, apart.
type Engine interface {
	// Adopt reads what the kernel already holds once, so that a restarted agent takes over its state
	// instead of flushing it.
	Adopt(ctx context.Context) error
	// SyncService programs one Service's desired state (an empty State removes it) and says when it must be
	// looked at again (a draining real server's deadline), or 0.
	SyncService(ctx context.Context, key string, state desired.State) (requeueAfter time.Duration, ops int, err error)
	// Audit re-reads the kernel and repairs drift from what the agent last programmed.
	Audit(ctx context.Context) error
	// SetPodCIDRs tells the data-path rules which sources are pods.
	SetPodCIDRs(ctx context.Context, cidrs []netip.Prefix) error
}
