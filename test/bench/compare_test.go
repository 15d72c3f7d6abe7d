package bench

import "testing"

func TestToBest(t *testing.T) {
	tests := []struct {
		v, best float64
		want    string
	}{
		{1.5, 1.5, "best"},
		{3, 1.5, "2.0x"},
		{0.5, 0.02, "25.0x"},
		{0, 1, ""}, // no figure (kube-proxy has no Ready time)
		{1, 0, ""}, // no proxy has one
		{-1, 1, ""},
	}
	for _, tt := range tests {
		if got := toBest(tt.v, tt.best); got != tt.want {
			t.Errorf("toBest(%v, %v) = %q, want %q", tt.v, tt.best, got, tt.want)
		}
	}
}
