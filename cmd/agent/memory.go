package main

import (
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// agentGCPercent is the agent's GOGC when the environment sets none. At 10,000 Services its live heap is about
// 80 MB (the informer caches and the engine's model) while the peak RSS was 313 MiB: Go's default of 100 lets
// the heap grow to twice the live data between collections, and the cold start's and the audits' short-lived
// allocations set that peak. 50 trades a few percent more CPU in the collector for a third less headroom,
// on an agent that runs on every node. GOGC (and GOMEMLIMIT) in the environment still win.
const agentGCPercent = 50

// memoryLimitShare is the part of the container's memory limit the agent's Go runtime aims to stay under
// (its soft limit, GOMEMLIMIT), leaving the rest to what the runtime does not count (the binary's text, the
// kernel's socket buffers).
const memoryLimitShare = 0.9

// cgroupMemoryLimits are where the container's memory limit is read: cgroup v2, then v1.
var cgroupMemoryLimits = []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}

// tuneGC applies agentGCPercent unless GOGC is set, and, unless GOMEMLIMIT is set, a soft memory limit of
// memoryLimitShare of the container's memory limit, if it has one: the collector then works harder as the
// heap nears the limit instead of letting the kernel kill the agent. With no limit (the DaemonSet sets a
// request only: the agent's memory grows with the cluster) nothing changes.
func tuneGC(getenv func(string) string) {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(agentGCPercent)
	}
	if getenv("GOMEMLIMIT") == "" {
		if limit, ok := containerMemoryLimit(os.ReadFile); ok {
			debug.SetMemoryLimit(int64(float64(limit) * memoryLimitShare))
		}
	}
}

// containerMemoryLimit reads the memory limit of the agent's cgroup, if it has one.
func containerMemoryLimit(read func(string) ([]byte, error)) (int64, bool) {
	for _, p := range cgroupMemoryLimits {
		b, err := read(p)
		if err != nil {
			continue
		}
		return parseMemoryLimit(string(b))
	}
	return 0, false
}

// parseMemoryLimit parses a cgroup memory limit: "max" (v2) or a huge number (v1's page-rounded maximum)
// means none.
func parseMemoryLimit(s string) (int64, bool) {
	s = strings.TrimSpace(s)
	if s == "max" {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n >= math.MaxInt64/2 {
		return 0, false
	}
	return n, true
}
