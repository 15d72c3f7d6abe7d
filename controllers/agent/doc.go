// Package agent holds the per-node agent's controllers: the Kubernetes plumbing that fetches a Service, its
// EndpointSlices and the ServicePolicy that governs it, turns them into this node's desired IPVS state
// (package desired, pure) and hands that to the sync engine (package ipvs/syncer), which programs the kernel.
//
// The unit of work is one Service: an EndpointSlice or policy change re-evaluates only the Services it
// touches, so the cost of a change is proportional to that Service, not to the cluster.
package agent
