package dataplane

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/types"
)

// The kernel's own drop counters, read on every node and in every client and steady pod before and after
// the steady loop, so that a lost steady request can be put next to where the kernel says it dropped
// something (an IP discard, a UDP receive error, a conntrack insert failure) instead of being guessed at.

// droppedCounters are the /proc/net/snmp and /proc/net/stat/nf_conntrack fields that count a packet lost
// or refused; the report prints those that moved.
var droppedCounters = map[string][]string{
	"Ip":        {"InHdrErrors", "InAddrErrors", "InUnknownProtos", "InDiscards", "OutDiscards", "OutNoRoutes"},
	"Icmp":      {"InDestUnreachs", "OutDestUnreachs"},
	"Udp":       {"NoPorts", "InErrors", "RcvbufErrors", "SndbufErrors", "InCsumErrors", "MemErrors"},
	"conntrack": {"invalid", "insert_failed", "drop", "early_drop", "icmp_error", "clashres"},
}

// counterSnapshot is place ("node node-a", "pod ns/name") -> "Udp.InErrors" -> value.
type counterSnapshot map[string]map[string]int64

// readCounters reads the counters; a place it cannot read is left out (the report says nothing moved there,
// and the data path assertions do not depend on it).
func (r *churnRun) readCounters(ctx context.Context) counterSnapshot {
	snap := counterSnapshot{}
	for _, node := range r.nodes {
		out, err := r.drv.NodeExec(ctx, node, "cat", "/proc/net/snmp", "/proc/net/stat/nf_conntrack")
		if err == nil {
			snap["node "+node] = parseCounters(out)
		}
	}
	pods := slices.Clone(r.steadyPods)
	for _, node := range r.nodes {
		pods = append(pods, types.NamespacedName{Namespace: r.clients[node].Namespace, Name: r.clients[node].Name})
	}
	for _, p := range pods {
		if out, err := r.drv.PodExec(ctx, p, "cat", "/proc/net/snmp"); err == nil {
			snap["pod "+p.String()] = parseCounters(out)
		}
	}
	return snap
}

// parseCounters reads /proc/net/snmp ("Udp: name..." then "Udp: value..." lines) and, if present,
// /proc/net/stat/nf_conntrack (a header of names, then one line of hexadecimal values per CPU, summed).
func parseCounters(text string) map[string]int64 {
	got := map[string]int64{}
	var ctNames []string
	lines := strings.Split(text, "\n")
	for i := 0; i < len(lines); i++ {
		f := strings.Fields(lines[i])
		if len(f) == 0 {
			continue
		}
		if f[0] == "entries" { // the conntrack statistics' header
			ctNames = f
			continue
		}
		if ctNames != nil && len(f) == len(ctNames) {
			for j, name := range ctNames {
				if v, err := strconv.ParseInt(f[j], 16, 64); err == nil {
					got["conntrack."+name] += v
				}
			}
			continue
		}
		group, isGroup := strings.CutSuffix(f[0], ":")
		if !isGroup || i+1 >= len(lines) {
			continue
		}
		vals := strings.Fields(lines[i+1])
		if len(vals) != len(f) || vals[0] != f[0] {
			continue
		}
		for j := 1; j < len(f); j++ {
			if v, err := strconv.ParseInt(vals[j], 10, 64); err == nil {
				got[group+"."+f[j]] = v
			}
		}
		i++
	}
	return got
}

// minus is s - before, for places and counters in both.
func (s counterSnapshot) minus(before counterSnapshot) counterSnapshot {
	d := counterSnapshot{}
	for place, now := range s {
		then, ok := before[place]
		if !ok {
			continue
		}
		d[place] = map[string]int64{}
		for k, v := range now {
			if w, ok := then[k]; ok {
				d[place][k] = v - w
			}
		}
	}
	return d
}

// String lists, per place, the drop counters that moved.
func (s counterSnapshot) String() string {
	var b strings.Builder
	for _, place := range slices.Sorted(maps.Keys(s)) {
		var moved []string
		for _, group := range slices.Sorted(maps.Keys(droppedCounters)) {
			for _, name := range droppedCounters[group] {
				if v := s[place][group+"."+name]; v != 0 {
					moved = append(moved, fmt.Sprintf("%s.%s=%+d", group, name, v))
				}
			}
		}
		if len(moved) > 0 {
			fmt.Fprintf(&b, "    %s: %s\n", place, strings.Join(moved, " "))
		}
	}
	if b.Len() == 0 {
		return "    none\n"
	}
	return b.String()
}
