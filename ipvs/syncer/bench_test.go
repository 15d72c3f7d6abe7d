package syncer_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"

	"github.com/ipvs-operator/ipvs-operator/controllers/agent/desired"
	"github.com/ipvs-operator/ipvs-operator/ipvs/fake"
	"github.com/ipvs-operator/ipvs-operator/ipvs/syncer"
)

const (
	benchServices  = 10_000
	benchEndpoints = 5
)

// cluster is a synthetic cluster: benchServices labelled ClusterIP Services, each with one slice of
// benchEndpoints ready endpoints.
type cluster struct {
	services []*corev1.Service
	slices   [][]*discoveryv1.EndpointSlice
	keys     []string
}

func newCluster() *cluster {
	c := &cluster{}
	for i := range benchServices {
		name := fmt.Sprintf("svc-%d", i)
		c.keys = append(c.keys, "bench/"+name)
		ip := fmt.Sprintf("10.96.%d.%d", i/250, i%250+1)
		c.services = append(c.services, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: name, Labels: map[string]string{desired.ProxyNameLabel: desired.ProxyName}},
			Spec: corev1.ServiceSpec{
				Type: corev1.ServiceTypeClusterIP, ClusterIP: ip, ClusterIPs: []string{ip},
				Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromString("http")}},
			},
		})
		es := &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: "bench", Name: name + "-abcde", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
		}
		for j := range benchEndpoints {
			n := i*benchEndpoints + j
			es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{
				Addresses:  []string{fmt.Sprintf("10.%d.%d.%d", 128+n/65536, n/256%256, n%256)},
				Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
				NodeName:   ptr.To("node-b"),
			})
		}
		c.slices = append(c.slices, []*discoveryv1.EndpointSlice{es})
	}
	return c
}

type kernel struct {
	ipvs  *fake.IPVS
	vips  *fake.VIPs
	rules *fake.Rules
}

func newKernel() kernel { return kernel{fake.New(), fake.NewVIPs(), fake.NewRules()} }

// changes counts the kernel's IPVS and VIP changes; reads counts per-virtual-server reads; dumps counts
// full dumps (services, addresses), which a change must never need.
func (k kernel) changes() int {
	ops, vops := k.ipvs.Ops(), k.vips.Ops()
	return ops[fake.AddService] + ops[fake.UpdateService] + ops[fake.DeleteService] + ops[fake.AddDestination] +
		ops[fake.UpdateDestination] + ops[fake.DeleteDestination] + vops[fake.Bind] + vops[fake.Unbind]
}
func (k kernel) reads() int      { return k.ipvs.OpCount(fake.Destinations) }
func (k kernel) dumps() int      { return k.ipvs.OpCount(fake.Services) + k.vips.Ops()[fake.List] }
func (k kernel) nftUpdates() int { return k.rules.Ops()[fake.Update] }

func (k kernel) reset() {
	k.ipvs.ResetOps()
	k.vips.ResetOps()
	k.rules.ResetOps()
}

var opts = desired.Options{NodeName: "node-a"}

func syncAll(ctx context.Context, b *testing.B, s *syncer.Syncer, c *cluster) {
	for i, svc := range c.services {
		st, err := desired.ForService(svc, c.slices[i], nil, opts)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.SyncService(ctx, c.keys[i], st); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkColdBuild: desired.ForService for every Service and SyncService into an empty kernel. One op is
// the whole cluster (10,000 Services x 5 endpoints); engine-MB is the engine's live heap afterwards.
func BenchmarkColdBuild(b *testing.B) {
	c, ctx := newCluster(), context.Background()
	clk := clocktesting.NewFakePassiveClock(time.Now())
	b.ReportAllocs()
	changes, engineBytes := 0, uint64(0)
	for b.Loop() {
		b.StopTimer()
		k := newKernel()
		s := syncer.New(k.ipvs, k.vips, k.rules, clk, syncer.Options{})
		if err := s.Adopt(ctx); err != nil {
			b.Fatal(err)
		}
		k.reset()
		b.StartTimer()
		syncAll(ctx, b, s, c)
		b.StopTimer()
		changes += k.changes()
		if k.dumps() != 0 || k.reads() != 0 {
			b.Fatalf("a cold build read the kernel: %d dumps, %d reads", k.dumps(), k.reads())
		}
		with := liveHeap()
		runtime.KeepAlive(s)
		s = nil
		engineBytes += with - liveHeap()
		runtime.KeepAlive(k)
		b.StartTimer()
	}
	b.ReportMetric(float64(changes)/float64(b.N), "kernel-ops/op")
	b.ReportMetric(float64(engineBytes)/float64(b.N)/1e6, "engine-MB")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchServices), "ns/service")
}

// liveHeap is the heap in use after a collection: engine-MB, the engine's model of the cluster, is its
// difference with and without the Syncer (the fake kernel, which stays, is not counted).
func liveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkEndpointFlip: in the warm 10,000-Service state, one endpoint of one Service flips its ready
// condition; the Service is re-translated and synced. Alternate ops take it out (a read of that one
// virtual server's connection counts, then a delete: it has none) and put it back (an add).
func BenchmarkEndpointFlip(b *testing.B) {
	c, ctx := newCluster(), context.Background()
	k := newKernel()
	clk := clocktesting.NewFakePassiveClock(time.Now())
	s := syncer.New(k.ipvs, k.vips, k.rules, clk, syncer.Options{})
	if err := s.Adopt(ctx); err != nil {
		b.Fatal(err)
	}
	syncAll(ctx, b, s, c)
	k.reset()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		n := (i / 2) % benchServices // out, then back in
		i++
		ep := &c.slices[n][0].Endpoints[0]
		ep.Conditions.Ready = ptr.To(!*ep.Conditions.Ready)
		st, err := desired.ForService(c.services[n], c.slices[n], nil, opts)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.SyncService(ctx, c.keys[n], st); err != nil {
			b.Fatal(err)
		}
	}
	if k.dumps() != 0 {
		b.Fatalf("an endpoint flip dumped the kernel %d times", k.dumps())
	}
	b.ReportMetric(float64(k.changes())/float64(b.N), "kernel-ops/op")
	b.ReportMetric(float64(k.reads())/float64(b.N), "kernel-reads/op")
	b.ReportMetric(float64(k.nftUpdates())/float64(b.N), "nft-updates/op")
}

// warm returns a Syncer that has programmed the whole cluster into a fake kernel.
func warm(b *testing.B) (*syncer.Syncer, kernel, context.Context) {
	c, ctx := newCluster(), context.Background()
	k := newKernel()
	s := syncer.New(k.ipvs, k.vips, k.rules, clocktesting.NewFakePassiveClock(time.Now()), syncer.Options{})
	if err := s.Adopt(ctx); err != nil {
		b.Fatal(err)
	}
	syncAll(ctx, b, s, c)
	k.reset()
	return s, k, ctx
}

// BenchmarkCheckDrift: the drift canary in the warm 10,000-Service state. Its cost must not grow with the
// number of Services: it is asserted in kernel reads per check (3: the interface, the table, one virtual
// server), not in time.
func BenchmarkCheckDrift(b *testing.B) {
	s, k, ctx := warm(b)
	b.ReportAllocs()
	for b.Loop() {
		if d, err := s.CheckDrift(ctx); d != syncer.NoDrift || err != nil {
			b.Fatalf("CheckDrift = %q, %v", d, err)
		}
	}
	reads := k.ipvs.TotalOps() + k.vips.Ops()[fake.InterfaceUp] + k.rules.Ops()[fake.Exists]
	if reads != 3*b.N || k.dumps() != 0 {
		b.Fatalf("%d CheckDrift calls made %d kernel reads (%d dumps); want 3 each, no dump", b.N, reads, k.dumps())
	}
	b.ReportMetric(float64(reads)/float64(b.N), "kernel-reads/op")
}

// BenchmarkAudit: a periodic audit of the warm 10,000-Service state with nothing to repair.
func BenchmarkAudit(b *testing.B) {
	s, k, ctx := warm(b)
	for b.Loop() {
		if err := s.Audit(ctx); err != nil {
			b.Fatal(err)
		}
	}
	if k.changes() != 0 {
		b.Fatalf("an audit of an intact kernel made %d changes", k.changes())
	}
	b.ReportMetric(float64(k.reads())/float64(b.N), "kernel-reads/op")
	// The whole-table reads: services, real servers (one read of every virtual server's), addresses, sets.
	b.ReportMetric(float64(k.dumps()+k.ipvs.OpCount(fake.AllDestinations)+k.rules.Ops()[fake.Elements])/float64(b.N), "kernel-dumps/op")
}

// BenchmarkResyncAfterFlush: kube-proxy's start-up cleanup (or `ipvsadm -C`) flushed the warm
// 10,000-Service table; the canary notices it and Resync rebuilds every virtual server and real server.
func BenchmarkResyncAfterFlush(b *testing.B) {
	s, k, ctx := warm(b)
	changes := 0
	for b.Loop() {
		b.StopTimer()
		k.ipvs.Flush()
		if d, _ := s.CheckDrift(ctx); d != syncer.DriftIPVS {
			b.Fatalf("CheckDrift = %q after a flush", d)
		}
		k.reset()
		b.StartTimer()
		if err := s.Resync(ctx); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		changes += k.changes()
		b.StartTimer()
	}
	b.ReportMetric(float64(changes)/float64(b.N), "kernel-ops/op")
}
