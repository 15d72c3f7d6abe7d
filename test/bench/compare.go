package bench

import (
	"fmt"
	"slices"
	"time"
)

// toBest tells v against the best (smallest) value of a row of the table: "best", or how many times the
// best it is; "" when either is not a measurement (zero: the proxy has no such figure).
func toBest(v, best float64) string {
	switch {
	case v <= 0 || best <= 0:
		return ""
	case v == best:
		return "best"
	}
	return fmt.Sprintf("%.1fx", v/best)
}

// percentile is the nearest-rank percentile of ds (100: the maximum).
func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	k := (p*len(s) + 99) / 100
	if k < 1 {
		k = 1
	}
	return s[k-1]
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
