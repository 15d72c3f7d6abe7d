package bench

import (
	"fmt"
	"html"
	"io"
	"math"
	"slices"
	"strings"
	"time"
)

// Series is one proxy's latencies in a chart.
type Series struct {
	Name      string
	Latencies []time.Duration
}

// Chart geometry, in SVG user units.
const (
	chartW, chartH         = 760, 420
	plotX0, plotY0         = 70, 40
	plotX1, plotY1         = chartW - 190, chartH - 60
	chartMinSpan   float64 = 1 // decades shown at least
)

// chartColors are told apart also in grey print (dark, mid, light, then dashed repeats).
var chartColors = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"}

// FlipChart writes an SVG of the latency distributions: one empirical CDF per series on a logarithmic
// time axis, so that proxies tens of times apart share one picture, with the p50 and p99 levels drawn.
// A series without latencies is listed in the legend only. The output depends on nothing but its input.
func FlipChart(w io.Writer, title string, series []Series) error {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, s := range series {
		for _, d := range s.Latencies {
			if ms := msOf(d); ms > 0 {
				lo, hi = math.Min(lo, ms), math.Max(hi, ms)
			}
		}
	}
	if math.IsInf(lo, 1) {
		lo, hi = 1, 10
	}
	dLo, dHi := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	if dHi-dLo < chartMinSpan {
		dHi = dLo + chartMinSpan
	}
	x := func(ms float64) float64 {
		return plotX0 + (math.Log10(ms)-dLo)/(dHi-dLo)*(plotX1-plotX0)
	}
	y := func(q float64) float64 { return plotY1 - q*(plotY1-plotY0) }

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n",
		chartW, chartH, chartW, chartH)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", chartW, chartH)
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="14">%s</text>`+"\n", plotX0, html.EscapeString(title))
	// Grid: 1, 2, 5 of each decade; the share of flips at 0, 50, 99 and 100%.
	for dec := dLo; dec <= dHi; dec++ {
		for _, m := range []float64{1, 2, 5} {
			ms := m * math.Pow(10, dec)
			if math.Log10(ms) > dHi+1e-9 {
				break
			}
			stroke := "#eee"
			if m == 1 {
				stroke = "#ccc"
			}
			fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s"/>`+"\n", x(ms), plotY0, x(ms), plotY1, stroke)
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle" fill="#555">%s</text>`+"\n", x(ms), plotY1+16, axisLabel(ms))
		}
	}
	for _, q := range []float64{0, 0.5, 0.99, 1} {
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ccc"/>`+"\n", plotX0, y(q), plotX1, y(q))
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end" fill="#555">%s</text>`+"\n", plotX0-6, y(q)+4, fmt.Sprintf("p%g", q*100))
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">API write to kernel state (log scale)</text>`+"\n", (plotX0+plotX1)/2, chartH-20)
	fmt.Fprintf(&b, `<text transform="translate(18 %d) rotate(-90)" text-anchor="middle">share of flips</text>`+"\n", (plotY0+plotY1)/2)

	for i, s := range series {
		color := chartColors[i%len(chartColors)]
		dash := ""
		if i >= len(chartColors) {
			dash = ` stroke-dasharray="6 3"`
		}
		ly := plotY0 + 10 + i*36
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"%s/>`+"\n", plotX1+16, ly, plotX1+40, ly, color, dash)
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`+"\n", plotX1+46, ly+4, html.EscapeString(s.Name))
		if len(s.Latencies) == 0 {
			fmt.Fprintf(&b, `<text x="%d" y="%d" fill="#555">no flips</text>`+"\n", plotX1+46, ly+18)
			continue
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d" fill="#555">p50 %s, p99 %s</text>`+"\n", plotX1+46, ly+18,
			dur(percentile(s.Latencies, 50)), dur(percentile(s.Latencies, 99)))
		sorted := slices.Clone(s.Latencies)
		slices.Sort(sorted)
		// A step function: the share of flips at or below each latency.
		var pts []string
		prev := 0.0
		for k, d := range sorted {
			ms := math.Max(msOf(d), math.Pow(10, dLo))
			q := float64(k+1) / float64(len(sorted))
			pts = append(pts, fmt.Sprintf("%.1f,%.1f %.1f,%.1f", x(ms), y(prev), x(ms), y(q)))
			prev = q
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2"%s points="%s"/>`+"\n", color, dash, strings.Join(pts, " "))
	}
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#888"/>`+"\n", plotX0, plotY0, plotX1-plotX0, plotY1-plotY0)
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func msOf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// axisLabel names a grid line: 20ms, 500ms, 2s.
func axisLabel(ms float64) string {
	if ms >= 1000 {
		return fmt.Sprintf("%gs", ms/1000)
	}
	return fmt.Sprintf("%gms", ms)
}
