//go:build lab

package bench

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Row is one line of the table: a measure and its value for each proxy, as text; Limit is the raw
// netlink loop's value where one exists. Ratio tells each proxy against the best of the proxies (several
// proxies: "best" or "3.2x"), or, with one proxy, against the limit or its own p50.
type Row struct {
	Measure string
	Values  []string
	Limit   string
	Ratio   []string
}

// Table renders the results of a run, one column per proxy. Absolute times in a TCG VM mean little:
// the ratios between proxies and to the raw loop (same objects, same VM) are what carries over.
func (h *Harness) Table(results []*Result) []Row {
	var rows []Row
	// num, when set, makes the row comparable: smaller is better, and with several proxies each is told
	// against the best. alone is the ratio shown with a single proxy.
	add := func(measure, limit string, value func(*Result) string, num func(*Result) float64, alone func(*Result) string) {
		r := Row{Measure: measure, Limit: limit}
		best := 0.0
		if num != nil {
			for _, res := range results {
				if v := num(res); v > 0 && (best == 0 || v < best) {
					best = v
				}
			}
		}
		for _, res := range results {
			r.Values = append(r.Values, value(res))
			switch {
			case len(results) > 1 && num != nil:
				r.Ratio = append(r.Ratio, toBest(num(res), best))
			case alone != nil:
				r.Ratio = append(r.Ratio, alone(res))
			default:
				r.Ratio = append(r.Ratio, "")
			}
		}
		rows = append(rows, r)
	}
	raw := time.Duration(h.RawLoop.Seconds * float64(time.Second))
	toLimit := func(v, limit float64) string {
		if v <= 0 || limit <= 0 {
			return ""
		}
		return fmt.Sprintf("%.1fx limit", v/limit)
	}
	toRaw := func(d time.Duration) string {
		if raw <= 0 || d <= 0 {
			return ""
		}
		return fmt.Sprintf("%.1fx limit", d.Seconds()/raw.Seconds())
	}
	secs := func(f func(*Result) time.Duration) func(*Result) float64 {
		return func(r *Result) float64 { return f(r).Seconds() }
	}
	n := h.cfg.Services
	add(fmt.Sprintf("API writes: %d Services + %d EndpointSlices", n, n), "", func(*Result) string { return dur(h.Writes) }, nil, nil)
	add("cold start to Ready", "", func(r *Result) string {
		if r.ColdReady == 0 {
			return "n/a"
		}
		return dur(r.ColdReady)
	}, secs(func(r *Result) time.Duration { return r.ColdReady }), func(r *Result) string { return toRaw(r.ColdReady) })
	add("cold start to full kernel state", dur(raw), func(r *Result) string { return dur(r.ColdFull) },
		secs(func(r *Result) time.Duration { return r.ColdFull }), func(r *Result) string { return toRaw(r.ColdFull) })
	if len(results) > 1 {
		add("  against the raw loop", "", func(r *Result) string { return toRaw(r.ColdFull) }, nil, nil)
	}
	add(fmt.Sprintf("  raw loop split: IPVS %s, VIPs %s", dur(time.Duration(h.RawLoop.IPVSSeconds*float64(time.Second))),
		dur(time.Duration(h.RawLoop.VIPSeconds*float64(time.Second)))), "", func(*Result) string { return "" }, nil, nil)
	pct := func(p int) func(*Result) time.Duration {
		return func(r *Result) time.Duration { return percentile(r.Flips, p) }
	}
	add("single flip p50", "", func(r *Result) string { return dur(pct(50)(r)) }, secs(pct(50)), nil)
	add("single flip p99", "", func(r *Result) string { return dur(pct(99)(r)) }, secs(pct(99)),
		func(r *Result) string { return ratio(pct(99)(r), pct(50)(r)) + " p50" })
	add("single flip max", "", func(r *Result) string { return dur(pct(100)(r)) }, secs(pct(100)),
		func(r *Result) string { return ratio(pct(100)(r), pct(50)(r)) + " p50" })
	add("  flips, their span", "", func(r *Result) string { return fmt.Sprintf("%d over %s", len(r.Flips), dur(r.FlipSpan)) }, nil, nil)
	add("  API write of a flip p50 / max", "", func(r *Result) string {
		return dur(percentile(r.FlipWrites, 50)) + " / " + dur(percentile(r.FlipWrites, 100))
	}, nil, nil)
	add(fmt.Sprintf("burst of %d flips: all in kernel", h.cfg.Burst), "", func(r *Result) string { return dur(r.BurstAll) },
		secs(func(r *Result) time.Duration { return r.BurstAll }), nil)
	add("  burst per flip p50 / max", "", func(r *Result) string {
		return dur(percentile(r.Burst, 50)) + " / " + dur(percentile(r.Burst, 100))
	}, nil, nil)
	if h.cfg.DataPath > 0 {
		// Rates are told as times fewer than the best (1/rate), so "2.0x" is worse everywhere in the table.
		lim := h.DataPathLimit
		perSec := func(d DataPath) string { return fmt.Sprintf("%.0f/s", d.Rate()) }
		inv := func(r *Result) float64 {
			if r.DataPath.Rate() <= 0 {
				return 0
			}
			return 1 / r.DataPath.Rate()
		}
		add(fmt.Sprintf("data path: connections through one ClusterIP (%s)", dur(h.cfg.DataPath)), perSec(lim),
			func(r *Result) string { return perSec(r.DataPath) }, inv,
			func(r *Result) string { return toLimit(lim.Rate(), r.DataPath.Rate()) })
		for _, p := range []int{50, 99} {
			lat := func(r *Result) time.Duration { return percentile(r.DataPath.Latencies, p) }
			add(fmt.Sprintf("  request p%d (connect, line, answer, close)", p), dur(percentile(lim.Latencies, p)),
				func(r *Result) string { return dur(lat(r)) }, secs(lat),
				func(r *Result) string { return toLimit(lat(r).Seconds(), percentile(lim.Latencies, p).Seconds()) })
		}
		add("  requests, failed", fmt.Sprintf("%d, %d", lim.Requests, lim.Errors), func(r *Result) string {
			return fmt.Sprintf("%d, %d", r.DataPath.Requests, r.DataPath.Errors)
		}, nil, nil)
	}
	add("CPU seconds: cold start / whole run", "", func(r *Result) string { return fmt.Sprintf("%.1f / %.1f", r.ColdCPU, r.CPU) },
		func(r *Result) float64 { return r.CPU }, nil)
	add(fmt.Sprintf("CPU while idle (%s), share of a core", dur(h.cfg.Idle)), "", func(r *Result) string { return fmt.Sprintf("%.1f%%", 100*r.IdleCPU) },
		func(r *Result) float64 { return r.IdleCPU }, nil)
	add("peak RSS", "", func(r *Result) string { return fmt.Sprintf("%d MiB", r.PeakRSS>>20) },
		func(r *Result) float64 { return float64(r.PeakRSS) }, nil)
	add(fmt.Sprintf("audits (agent, period %s) or full syncs (kube-proxy): count, mean", h.cfg.AuditPeriod), "", func(r *Result) string {
		if !r.AuditsOK {
			return "n/a"
		}
		if r.Audits == 0 {
			return "0"
		}
		return fmt.Sprintf("%d, %s", r.Audits, dur(time.Duration(r.AuditSeconds/float64(r.Audits)*float64(time.Second))))
	}, nil, nil)
	return rows
}

// Print writes the table.
func Print(out io.Writer, title string, names []string, rows []Row) {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(out, title)
	head := make([]string, 0, 2+2*len(names))
	head = append(head, "measure")
	for _, n := range names {
		head = append(head, n, "")
	}
	head = append(head, "limit: raw netlink loop; pod to pod")
	fmt.Fprintln(tw, strings.Join(head, "\t"))
	for _, r := range rows {
		cells := make([]string, 0, 2+2*len(r.Values))
		cells = append(cells, r.Measure)
		for i := range r.Values {
			cells = append(cells, r.Values[i], r.Ratio[i])
		}
		cells = append(cells, r.Limit)
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	_ = tw.Flush()
}
