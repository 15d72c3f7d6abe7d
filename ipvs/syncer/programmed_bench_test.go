package syncer_test

import (
	"context"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
	"github.com/ipvs-operator/ipvs-operator/ipvs/syncer"
)

// BenchmarkProgrammedRender: what one GET /debug/ipvs costs at 10,000 Services x 5 endpoints: the cache
// copied and printed, and not one kernel call (a dump of that table takes about 5 s in the lab VM).
func BenchmarkProgrammedRender(b *testing.B) {
	c, ctx := newCluster(), context.Background()
	k := newKernel()
	s := syncer.New(k.ipvs, k.vips, k.rules, clocktesting.NewFakePassiveClock(time.Now()), syncer.Options{})
	if err := s.Adopt(ctx); err != nil {
		b.Fatal(err)
	}
	syncAll(ctx, b, s, c)
	k.reset()
	b.ReportAllocs()
	var size int
	for b.Loop() {
		size = len(ipvs.Render(s.Programmed()))
	}
	if k.dumps() != 0 || k.reads() != 0 {
		b.Fatalf("Programmed read the kernel: %d dumps, %d reads", k.dumps(), k.reads())
	}
	b.ReportMetric(float64(size), "bytes")
}
