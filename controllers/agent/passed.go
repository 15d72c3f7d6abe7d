package agent

import (
	"context"
	"slices"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The start-up pass syncs every Service once, while the controller's reconciles wait at the gate; meanwhile
// the informers have queued a reconcile for every Service (their initial events). Once the gate opens, each
// of those reconciles would translate its Service again from the same objects and hand the engine the
// state it already holds: at 10,000 Services that was about 9 CPU seconds right after the node turned ready,
// under the first changes it had to program. So the pass remembers what it synced each Service from, and the
// first reconcile of that Service returns at once if none of it changed (skipUnchanged).
//
// What a Service's desired state is computed from: the Service, its EndpointSlices, the ServicePolicies of
// its namespace, and, through a policy, health verdicts and slow-start ramps. Only Services no policy
// governs are remembered (their state depends on the first two alone), the policies are followed by a
// per-namespace count of their events, and the objects by their resourceVersions, which the API server
// changes on every write. Whatever kernel drift happens meanwhile is no reconcile's business either: a sync
// of an unchanged desired state plans against the engine's cache, which only the audit re-reads.

// passRecord is what the start-up pass synced a Service from.
type passRecord struct {
	// inputs are the resourceVersions of the Service and of its EndpointSlices (syncInputs).
	inputs string
	// policyEpoch is the count of ServicePolicy events in the Service's namespace before the pass read its
	// policies.
	policyEpoch uint64
}

// passRecords are the start-up pass's records, each taken once, by the Service's first reconcile.
type passRecords struct {
	mu sync.Mutex
	m  map[types.NamespacedName]passRecord
}

func (p *passRecords) put(k types.NamespacedName, r passRecord) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = map[types.NamespacedName]passRecord{}
	}
	p.m[k] = r
}

// take returns k's record and forgets it.
func (p *passRecords) take(k types.NamespacedName) (passRecord, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r, ok := p.m[k]
	if ok {
		delete(p.m, k)
		if len(p.m) == 0 {
			p.m = nil // the map's memory goes with its last record
		}
	}
	return r, ok
}

// clear forgets every record.
func (p *passRecords) clear() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.m = nil
}

// policyEpochs counts ServicePolicy events per namespace.
type policyEpochs struct {
	mu sync.Mutex
	m  map[string]uint64
}

func (p *policyEpochs) bump(ns string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = map[string]uint64{}
	}
	p.m[ns]++
}

func (p *policyEpochs) get(ns string) uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.m[ns]
}

// syncInputs identifies the versions of a Service and its EndpointSlices: equal for two reads exactly when
// neither the Service nor any of its slices was written in between, and no slice came or went.
func syncInputs(svc *corev1.Service, epSlices []*discoveryv1.EndpointSlice) string {
	parts := make([]string, 0, len(epSlices))
	for _, es := range epSlices {
		parts = append(parts, es.Name+"="+es.ResourceVersion)
	}
	slices.Sort(parts) // the index lists them in no particular order
	return svc.ResourceVersion + ";" + strings.Join(parts, ";")
}

// skipUnchanged reports whether key's reconcile has nothing to do: the start-up pass synced the Service
// from the objects the cache holds now, and no ServicePolicy event came for its namespace since. It is
// asked once per Service; a record the cache cannot confirm is dropped and the Service synced as usual.
func (r *ServiceReconciler) skipUnchanged(ctx context.Context, key types.NamespacedName) bool {
	rec, ok := r.passed.take(key)
	if !ok || r.policyEpochs.get(key.Namespace) != rec.policyEpoch {
		return false
	}
	svc := &corev1.Service{}
	if err := r.Get(ctx, key, svc, client.UnsafeDisableDeepCopy); err != nil {
		return false // gone, or unreadable: the sync says what to do
	}
	epSlices, err := r.endpointSlices(ctx, key)
	if err != nil {
		return false
	}
	return syncInputs(svc, epSlices) == rec.inputs
}
