package kubelet

import (
	"testing"
	"time"
)

func TestStopGraceAfterHook(t *testing.T) {
	for _, tc := range []struct {
		podGrace, elapsed, maxGrace, want time.Duration
	}{
		{100 * time.Second, 10 * time.Second, 3 * time.Second, 3 * time.Second},          // the lab's cap
		{100 * time.Second, 99 * time.Second, 30 * time.Second, minimumStopGracePeriod},  // at least the kubelet's minimum
		{100 * time.Second, 200 * time.Second, 30 * time.Second, minimumStopGracePeriod}, // hook ran over (timed out)
		{10 * time.Second, 5 * time.Second, 30 * time.Second, 5 * time.Second},           // what is left
		{100 * time.Second, 99 * time.Second, time.Second, time.Second},                  // the cap wins over the minimum
	} {
		if got := stopGraceAfterHook(tc.podGrace, tc.elapsed, tc.maxGrace); got != tc.want {
			t.Errorf("stopGraceAfterHook(%v, %v, %v) = %v, want %v", tc.podGrace, tc.elapsed, tc.maxGrace, got, tc.want)
		}
	}
}
