package agent

import (
	"context"
	"net/netip"

	"github.com/ipvs-operator/ipvs-operator/controllers/agent/desired"
	"github.com/ipvs-operator/ipvs-operator/ipvs/syncer"
)

// Engine is what the controllers need of the sync engine (ipvs/syncer.Syncer implements it). It is an interface
// so the controllers can be tested against a recording engine, and the engine against a fake kernel, apart.
type Engine interface {
	// Adopt reads what the kernel already holds once, so that a restarted agent takes over its state
	// instead of flushing it.
	Adopt(ctx context.Context) error
	// SyncService programs one Service's desired state (an empty State removes it) and says when it must be
	// looked at again (a draining real server), and how many kernel operations it took.
	SyncService(ctx context.Context, key string, state desired.State) (syncer.Result, error)
	// Retain keeps a Service's kernel state as it is when its desired state cannot be computed, so that one
	// bad object never tears down a healthy data path (not even in the first sweep after a restart).
	Retain(ctx context.Context, key string, vips []netip.Addr) (syncer.Result, error)
	// Audit re-reads the kernel and repairs drift from what the agent last programmed.
	Audit(ctx context.Context) error
	// CheckDrift is the cheap canary (O(1) kernel reads): did the kernel lose the agent's state wholesale
	// (IPVS flushed, dummy interface or nftables table deleted)?
	CheckDrift(ctx context.Context) (syncer.Drift, error)
	// Resync is the full audit run at once after drift, preempting a periodic one under way.
	Resync(ctx context.Context) error
	// SetPodCIDRs tells the data-path rules which sources are pods.
	SetPodCIDRs(ctx context.Context, cidrs []netip.Prefix) error
}
