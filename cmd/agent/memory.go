package main

import (
	"runtime/debug"
)

// agentGCPercent is the agent's GOGC when the environment sets none. At 10,000 Services its live heap is about
// 80 MB (the informer caches and the engine's model) while the peak RSS was 313 MiB: Go's default of 100 lets
// the heap grow to twice the live data between collections, and the cold start's and the audits' short-lived
// allocations set that peak. 50 trades a few percent more CPU in the collector for a third less headroom,
// on an agent that runs on every node. GOGC (and GOMEMLIMIT) in the environment still win.
const agentGCPercent = 50

// tuneGC applies agentGCPercent unless GOGC is set.
func tuneGC(getenv func(string) string) {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(agentGCPercent)
	}
}
