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
// netlink loop's value where one exists, and Ratio tells each proxy against it (or against its own p50).
type Row struct {
	Measure string
	Values  []string
	Limit   string
	Ratio   []string
}

// Table renders the results of a run, one column per proxy. Absolute times in a TCG VM mean little:
// the ratios to the raw loop (same objects, same VM) are what carries over.
func (h *Harness) Table(results []*Result) []Row {
	var rows []Row
	add := func(measure, limit string, value func(*Result) string, ratio func(*Result) string) {
		r := Row{Measure: measure, Limit: limit}
		for _, res := range results {
			r.Values = append(r.Values, value(res))
			if ratio != nil {
				r.Ratio = append(r.Ratio, ratio(res))
			} else {
				r.Ratio = append(r.Ratio, "")
			}
		}
		rows = append(rows, r)
	}
	raw := time.Duration(h.RawLoop.Seconds * float64(time.Second))
	toRaw := func(d time.Duration) string {
		if raw <= 0 || d <= 0 {
			return ""
		}
		return fmt.Sprintf("%.1fx limit", d.Seconds()/raw.Seconds())
	}
	n := h.cfg.Services
	add(fmt.Sprintf("API writes: %d Services + %d EndpointSlices", n, n), "", func(*Result) string { return dur(h.Writes) }, nil)
	add("cold start to Ready", "", func(r *Result) string {
		if r.ColdReady == 0 {
			return "n/a"
		}
		return dur(r.ColdReady)
	}, func(r *Result) string { return toRaw(r.ColdReady) })
	add("cold start to full kernel state", dur(raw), func(r *Result) string { return dur(r.ColdFull) },
		func(r *Result) string { return toRaw(r.ColdFull) })
	add(fmt.Sprintf("  raw loop split: IPVS %s, VIPs %s", dur(time.Duration(h.RawLoop.IPVSSeconds*float64(time.Second))),
		dur(time.Duration(h.RawLoop.VIPSeconds*float64(time.Second)))), "", func(*Result) string { return "" }, nil)
	add("single flip p50", "", func(r *Result) string { return dur(percentile(r.Flips, 50)) }, nil)
	add("single flip p99", "", func(r *Result) string { return dur(percentile(r.Flips, 99)) },
		func(r *Result) string { return ratio(percentile(r.Flips, 99), percentile(r.Flips, 50)) + " p50" })
	add("single flip max", "", func(r *Result) string { return dur(percentile(r.Flips, 100)) },
		func(r *Result) string { return ratio(percentile(r.Flips, 100), percentile(r.Flips, 50)) + " p50" })
	add("  flips, their span", "", func(r *Result) string { return fmt.Sprintf("%d over %s", len(r.Flips), dur(r.FlipSpan)) }, nil)
	add("  API write of a flip p50 / max", "", func(r *Result) string {
		return dur(percentile(r.FlipWrites, 50)) + " / " + dur(percentile(r.FlipWrites, 100))
	}, nil)
	add(fmt.Sprintf("burst of %d flips: all in kernel", h.cfg.Burst), "", func(r *Result) string { return dur(r.BurstAll) }, nil)
	add("  burst per flip p50 / max", "", func(r *Result) string {
		return dur(percentile(r.Burst, 50)) + " / " + dur(percentile(r.Burst, 100))
	}, nil)
	add("CPU seconds: cold start / whole run", "", func(r *Result) string { return fmt.Sprintf("%.1f / %.1f", r.ColdCPU, r.CPU) }, nil)
	add(fmt.Sprintf("CPU while idle (%s), share of a core", dur(h.cfg.Idle)), "", func(r *Result) string { return fmt.Sprintf("%.1f%%", 100*r.IdleCPU) }, nil)
	add("peak RSS", "", func(r *Result) string { return fmt.Sprintf("%d MiB", r.PeakRSS>>20) }, nil)
	add(fmt.Sprintf("audits (period %s): count, mean", h.cfg.AuditPeriod), "", func(r *Result) string {
		if !r.AuditsOK {
			return "n/a"
		}
		if r.Audits == 0 {
			return "0"
		}
		return fmt.Sprintf("%d, %s", r.Audits, dur(time.Duration(r.AuditSeconds/float64(r.Audits)*float64(time.Second))))
	}, nil)
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
	head = append(head, "raw netlink loop")
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

func dur(d time.Duration) string {
	switch {
	case d == 0:
		return "0"
	case d < time.Second:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	case d < 10*time.Minute:
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
	return d.Round(time.Second).String()
}

func ratio(a, b time.Duration) string {
	if b <= 0 {
		return ""
	}
	return fmt.Sprintf("%.1fx", float64(a)/float64(b))
}
