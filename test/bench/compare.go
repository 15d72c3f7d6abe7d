package bench

import "fmt"

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
