package syncer_test

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"

	"github.com/ipvs-operator/ipvs-operator/controllers/agent/desired"
	"github.com/ipvs-operator/ipvs-operator/ipvs"
	"github.com/ipvs-operator/ipvs-operator/ipvs/fake"
	"github.com/ipvs-operator/ipvs-operator/ipvs/syncer"
)

// The kernel's full dumps take time, which the in-memory fake does not: laggedIPVS and laggedRules add it,
// outside any lock, as the netlink implementations do since their dumps run on sockets of their own. The
// lags are the lab's at 10,000 Services divided by about 100, so that a benchmark run stays short.
const (
	servicesLag = 3 * time.Millisecond  // the IPVS service dump (lab: ~250 ms and more)
	elementsLag = 30 * time.Millisecond // the nftables element dump (lab: seconds)
)

type laggedIPVS struct{ *fake.IPVS }

func (l laggedIPVS) Services() ([]ipvs.Service, error) {
	time.Sleep(servicesLag)
	return l.IPVS.Services()
}

type laggedRules struct{ *fake.Rules }

func (l laggedRules) Elements() (ipvs.RuleElements, error) {
	time.Sleep(elementsLag)
	return l.Rules.Elements()
}

// BenchmarkFlipDuringAudit: single endpoint flips, one after another, in the warm 10,000-Service state
// while audits run back to back (the worst case of a node whose audit takes its whole period). One op is
// one flip; it reports the flips' latency (p50, p99, max: what make bench's flip tail comes from on the
// engine's side), the audits' mean duration and their kernel reads. A flip must never wait for an audit. The
// fakes hold their own lock while they copy a dump, which the kernel's dumps do not: the tail is an upper
// bound. On this machine (2 shared cores) the code before this benchmark gave flip p99 21-24 ms, max
// 154-175 ms, audits 540-560 ms with 4 set reads and 10,300 IPVS reads each; after, p99 16-18 ms, max
// 40-67 ms, audits 180-190 ms with one set read, one real-server dump and the re-reads of flipped Services.
func BenchmarkFlipDuringAudit(b *testing.B) {
	c, ctx := newCluster(), context.Background()
	k := newKernel()
	s := syncer.New(laggedIPVS{k.ipvs}, k.vips, laggedRules{k.rules}, clocktesting.NewFakePassiveClock(time.Now()), syncer.Options{})
	if err := s.Adopt(ctx); err != nil {
		b.Fatal(err)
	}
	syncAll(ctx, b, s, c)
	k.reset()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var audits, auditNanos atomic.Int64
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			t0 := time.Now()
			if err := s.Audit(ctx); err != nil {
				b.Error(err)
				return
			}
			auditNanos.Add(int64(time.Since(t0)))
			audits.Add(1)
		}
	})

	var lat []time.Duration
	i := 0
	for b.Loop() {
		n := (i * 7919) % len(c.keys) // spread over the table
		i++
		ep := &c.slices[n][0].Endpoints[0]
		ep.Conditions.Ready = ptr.To(!*ep.Conditions.Ready)
		st, err := desired.ForService(c.services[n], c.slices[n], nil, opts)
		if err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		if _, err := s.SyncService(ctx, c.keys[n], st); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
		time.Sleep(100 * time.Microsecond) // flips arrive one at a time, not as a burst
	}
	close(stop)
	wg.Wait()

	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))]) / 1e6 }
	b.ReportMetric(q(0.5), "flip-p50-ms")
	b.ReportMetric(q(0.99), "flip-p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1])/1e6, "flip-max-ms")
	if n := audits.Load(); n > 0 {
		b.ReportMetric(float64(auditNanos.Load())/float64(n)/1e6, "audit-ms")
		b.ReportMetric(float64(k.rules.Ops()[fake.Elements])/float64(n), "nft-reads/audit")
		b.ReportMetric(float64(k.ipvs.OpCount(fake.Destinations)+k.ipvs.OpCount(fake.AllDestinations))/float64(n), "ipvs-reads/audit")
	}
}
