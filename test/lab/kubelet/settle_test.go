package kubelet

import (
	"context"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

func TestThreadWaiting(t *testing.T) {
	for stat, want := range map[string]bool{
		"1234 (agnhost) S 1 1234 1234 0 -1": true,
		"1234 (agnhost) R 1 1234 1234 0 -1": false,
		"1234 (agnhost) D 1 1234 1234 0 -1": false,
		"1234 (a (b) R) S 1 1234":           true, // comm with spaces and parentheses
		"1234 (a (b) S) R 1 1234":           false,
		"1234 (sh) Z 1 1234":                true,
		"garbage":                           true,
	} {
		if got := threadWaiting([]byte(stat)); got != want {
			t.Errorf("threadWaiting(%q) = %v, want %v", stat, got, want)
		}
	}
}

// TestWaitSettled runs real processes: one that waits at once settles within a few polls; one that computes
// before it waits settles only once the computation is over; one that never waits does not settle; and a
// busy child keeps its waiting parent (a shell) from settling.
func TestWaitSettled(t *testing.T) {
	const busy = 600 * time.Millisecond
	for _, tc := range []struct {
		name      string
		script    string
		timeout   time.Duration
		settles   bool
		notBefore time.Duration
	}{
		{"waits at once", "exec sleep 30", 3 * time.Second, true, 0},
		{"computes, then waits", "end=$(($(date +%s%N) + 600000000)); while [ $(date +%s%N) -lt $end ]; do :; done; exec sleep 30", 5 * time.Second, true, busy},
		{"never waits", "while :; do :; done", 500 * time.Millisecond, false, 0},
		{"a busy child under a waiting shell", "sh -c 'while :; do :; done'; sleep 30", 500 * time.Millisecond, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command("/bin/sh", "-c", tc.script)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				_ = exec.Command("pkill", "-KILL", "-P", strconv.Itoa(cmd.Process.Pid)).Run()
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
			})
			start := time.Now()
			got := waitSettled(context.Background(), "/proc", cmd.Process.Pid, tc.timeout, nil)
			took := time.Since(start)
			if got != tc.settles {
				t.Fatalf("settled = %v after %v, want %v", got, took, tc.settles)
			}
			if took < tc.notBefore {
				t.Errorf("settled after %v, before the program stopped computing (%v)", took, tc.notBefore)
			}
			if tc.settles && took > tc.notBefore+time.Second {
				t.Errorf("settled only after %v", took)
			}
		})
	}
}
