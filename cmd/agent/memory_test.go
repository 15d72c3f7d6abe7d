package main

import (
	"os"
	"runtime/debug"
	"testing"
)

func TestTuneGC(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	for _, tt := range []struct {
		gogc string
		want int
	}{{"", agentGCPercent}, {"100", 100}, {"off", 100}} {
		debug.SetGCPercent(100)
		tuneGC(func(k string) string {
			if k == "GOGC" {
				return tt.gogc
			}
			return ""
		})
		if got := debug.SetGCPercent(100); got != tt.want {
			t.Errorf("GOGC=%q: GC percent %d, want %d", tt.gogc, got, tt.want)
		}
	}
}

func TestContainerMemoryLimit(t *testing.T) {
	for _, tt := range []struct {
		name  string
		files map[string]string
		want  int64
		ok    bool
	}{
		{"cgroup v2 limit", map[string]string{"/sys/fs/cgroup/memory.max": "268435456\n"}, 268435456, true},
		{"cgroup v2 without limit", map[string]string{"/sys/fs/cgroup/memory.max": "max\n"}, 0, false},
		{"cgroup v1 limit", map[string]string{"/sys/fs/cgroup/memory/memory.limit_in_bytes": "134217728\n"}, 134217728, true},
		{"cgroup v1 without limit", map[string]string{"/sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n"}, 0, false},
		{"no cgroup files", nil, 0, false},
		{"garbage", map[string]string{"/sys/fs/cgroup/memory.max": "lots"}, 0, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := containerMemoryLimit(func(p string) ([]byte, error) {
				if s, found := tt.files[p]; found {
					return []byte(s), nil
				}
				return nil, os.ErrNotExist
			})
			if got != tt.want || ok != tt.ok {
				t.Errorf("containerMemoryLimit() = %d, %v; want %d, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}
