package health

import (
	"context"
	"net"
	"net/netip"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// BenchmarkProber10kEndpoints measures what probing 10,000 endpoints costs a node: each op is one full round
// (every target probed once), real TCP connects to a listener on loopback (the targets are 10,000 distinct
// keys, each probe dials the one listener: only loopback traffic). It reports the process's CPU time per
// round (user+system, from getrusage: the in-process listener's accepts are included, so this is an upper
// bound; ns/op is the round's wall time, over the 1 s period when probes queue for the 64 slots), that as a share of one core at the default 5 s period, heap allocations per probe, and the heap
// the 10,000 registered targets hold.
//
//	go test -run '^$' -bench Prober10k -benchtime 3x ./controllers/agent/health/
func BenchmarkProber10kEndpoints(b *testing.B) {
	const n = 10000
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	listener := ln.Addr().String()

	var probes, failures atomic.Int64
	check := Check{Protocol: TCP, Period: time.Second, Timeout: 500 * time.Millisecond, UnhealthyThreshold: 3, HealthyThreshold: 2}
	targets := make([]Target, n)
	for i := range targets {
		targets[i] = Target{Addr: netip.AddrFrom4([4]byte{127, 1, byte(i >> 8), byte(i)}), Port: 8080, Check: check}
	}

	runtime.GC()
	var m0 runtime.MemStats
	runtime.ReadMemStats(&m0)
	p := NewProber(Options{
		Probe: func(ctx context.Context, t Target) error {
			ctx, cancel := context.WithTimeout(ctx, t.Timeout)
			defer cancel()
			return DialTCP(ctx, listener)
		},
		OnProbe: func(_ Target, err error, _ time.Duration) {
			if err != nil {
				failures.Add(1)
			}
			probes.Add(1)
		},
	})
	// 100 Services of 100 endpoints each, as the agent registers them.
	for s := range 100 {
		p.Set("ns/svc-"+string(rune('a'+s%26))+string(rune('a'+s/26)), targets[s*100:(s+1)*100])
	}
	runtime.GC()
	var m1 runtime.MemStats
	runtime.ReadMemStats(&m1)
	heapTargets := float64(m1.HeapAlloc-m0.HeapAlloc) / (1 << 20)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = p.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	// Let the first (randomly spread) round pass, then measure whole rounds.
	waitFor(&probes, n)
	var ru0, ru1 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	runtime.ReadMemStats(&m0)
	start := probes.Load()
	b.ResetTimer()
	waitFor(&probes, start+int64(b.N)*n)
	b.StopTimer()
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	runtime.ReadMemStats(&m1)
	done2 := probes.Load() - start

	cpu := time.Duration(ru1.Utime.Nano()+ru1.Stime.Nano()-ru0.Utime.Nano()-ru0.Stime.Nano()) / time.Duration(b.N)
	b.ReportMetric(heapTargets, "MiB-heap-10k-targets")
	b.ReportMetric(float64(cpu.Milliseconds()), "cpu-ms/round")
	b.ReportMetric(100*cpu.Seconds()/5, "%core-at-5s-period")
	b.ReportMetric(float64(m1.Mallocs-m0.Mallocs)/float64(done2), "allocs/probe")
	b.ReportMetric(float64(m1.TotalAlloc-m0.TotalAlloc)/float64(done2), "B/probe")
	if f := failures.Load(); f > 0 {
		b.Logf("%d of %d probes failed (a loaded machine)", f, probes.Load())
	}
}

func waitFor(c *atomic.Int64, n int64) {
	for c.Load() < n {
		time.Sleep(time.Millisecond)
	}
}
