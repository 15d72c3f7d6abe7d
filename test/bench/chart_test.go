package bench

import (
	"encoding/xml"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

func ms(v ...float64) []time.Duration {
	out := make([]time.Duration, len(v))
	for i, f := range v {
		out[i] = time.Duration(f * float64(time.Millisecond))
	}
	return out
}

// svgCounts decodes the chart as XML (it must be well formed) and counts its curves and texts.
func svgCounts(t *testing.T, svg string) (polylines int, texts []string) {
	t.Helper()
	d := xml.NewDecoder(strings.NewReader(svg))
	inText := false
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatalf("not well-formed SVG: %v\n%s", err, svg)
		}
		switch e := tok.(type) {
		case xml.StartElement:
			switch e.Name.Local {
			case "polyline":
				polylines++
			case "text":
				inText = true
			}
		case xml.EndElement:
			inText = false
		case xml.CharData:
			if inText {
				texts = append(texts, string(e))
			}
		}
	}
}

func TestFlipChart(t *testing.T) {
	tests := []struct {
		name      string
		series    []Series
		curves    int
		wantTexts []string
	}{
		{
			name: "agent and kube-proxy two decades apart",
			series: []Series{
				{Name: "agent", Latencies: ms(30, 37, 40, 93, 141)},
				{Name: "kube-proxy-nftables", Latencies: ms(1290, 1830, 2100)},
			},
			curves:    2,
			wantTexts: []string{"agent", "kube-proxy-nftables", "p50 40.0ms, p99 141.0ms", "p50 1.83s, p99 2.10s", "10ms", "100ms", "1s", "10s"},
		},
		{
			name:      "a proxy without flips is in the legend only",
			series:    []Series{{Name: "agent", Latencies: ms(5)}, {Name: "kube-proxy-ipvs"}},
			curves:    1,
			wantTexts: []string{"kube-proxy-ipvs", "no flips", "1ms", "10ms"},
		},
		{
			name:      "names are escaped",
			series:    []Series{{Name: `a<b>&"c"`, Latencies: ms(1, 2)}},
			curves:    1,
			wantTexts: []string{`a<b>&"c"`},
		},
		{name: "nothing at all", curves: 0, wantTexts: []string{"1ms", "10ms"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b strings.Builder
			if err := FlipChart(&b, "flips <title>", tt.series); err != nil {
				t.Fatal(err)
			}
			curves, texts := svgCounts(t, b.String())
			if curves != tt.curves {
				t.Errorf("%d curves, want %d", curves, tt.curves)
			}
			for _, want := range append(tt.wantTexts, "flips <title>") {
				found := false
				for _, got := range texts {
					found = found || got == want
				}
				if !found {
					t.Errorf("no text %q in %q", want, texts)
				}
			}
		})
	}
}

// Each curve is a step function with two points per flip, from 0 to 100%.
func TestFlipChartSteps(t *testing.T) {
	var b strings.Builder
	if err := FlipChart(&b, "", []Series{{Name: "agent", Latencies: ms(40, 10, 20, 30)}}); err != nil {
		t.Fatal(err)
	}
	svg := b.String()
	i := strings.Index(svg, `points="`)
	pts := strings.Fields(svg[i+len(`points="`) : i+strings.Index(svg[i:], `"/>`)])
	if len(pts) != 8 {
		t.Fatalf("%d points, want 8: %v", len(pts), pts)
	}
	first, last := pts[0], pts[len(pts)-1]
	if !strings.HasSuffix(first, ","+"360.0") || !strings.HasSuffix(last, ",40.0") {
		t.Errorf("curve from %s to %s, want from y=360 (0%%) to y=40 (100%%)", first, last)
	}
}
