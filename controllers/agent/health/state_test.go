package health

import "testing"

func TestStateObserve(t *testing.T) {
	const pass, fail = true, false
	for _, tc := range []struct {
		name                 string
		unhealthy, healthy   int32
		results              []bool
		want                 State
		wantChanges          int
		wantUnhealthyAtIndex int // the probe after which it first turned unhealthy; -1 for never
	}{
		{"starts healthy and stays so", 3, 2, []bool{pass, pass, pass}, State{}, 0, -1},
		{"failures below the threshold keep it in", 3, 2, []bool{fail, fail}, State{Run: 2}, 0, -1},
		{"a success resets the failure run", 3, 2, []bool{fail, fail, pass, fail, fail}, State{Run: 2}, 0, -1},
		{"threshold failures in a row take it out", 3, 2, []bool{fail, fail, fail}, State{Unhealthy: true}, 1, 2},
		{"threshold 1 takes it out at the first failure", 1, 1, []bool{fail}, State{Unhealthy: true}, 1, 0},
		{"threshold 0 counts as 1", 0, 0, []bool{fail, pass}, State{}, 2, 0},
		{"one success is not enough to come back", 2, 2, []bool{fail, fail, pass}, State{Unhealthy: true, Run: 1}, 1, 1},
		{"a failure resets the success run", 2, 2, []bool{fail, fail, pass, fail, pass}, State{Unhealthy: true, Run: 1}, 1, 1},
		{"healthy threshold successes put it back", 2, 2, []bool{fail, fail, pass, pass}, State{}, 2, 1},
		{"flapping below both thresholds changes nothing", 3, 3, []bool{fail, pass, fail, pass, fail, fail, pass}, State{}, 0, -1},
		{"out, back, out again", 1, 1, []bool{fail, pass, fail}, State{Unhealthy: true}, 3, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s State
			changes, firstOut := 0, -1
			for i, ok := range tc.results {
				var changed bool
				s, changed = s.Observe(ok, tc.unhealthy, tc.healthy)
				if changed {
					changes++
				}
				if s.Unhealthy && firstOut < 0 {
					firstOut = i
				}
			}
			if s != tc.want || changes != tc.wantChanges || firstOut != tc.wantUnhealthyAtIndex {
				t.Errorf("after %v: state %+v, %d changes, first out after probe %d; want %+v, %d, %d",
					tc.results, s, changes, firstOut, tc.want, tc.wantChanges, tc.wantUnhealthyAtIndex)
			}
		})
	}
}

func TestCheckStatusOK(t *testing.T) {
	for _, tc := range []struct {
		statuses string
		code     int
		want     bool
	}{
		{"", 200, true}, {"", 302, true}, {"", 404, false}, {"", 199, false},
		{"200-204", 204, true}, {"200-204", 205, false},
		{"200-200,500-503", 503, true}, {"200-200,500-503", 404, false},
	} {
		if got := (Check{Statuses: tc.statuses}).StatusOK(tc.code); got != tc.want {
			t.Errorf("Statuses %q, code %d: %v, want %v", tc.statuses, tc.code, got, tc.want)
		}
	}
}
