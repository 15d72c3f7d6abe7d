package agent_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/ipvs-operator/ipvs-operator/controllers/agent"
)

// cacheMemoryEnv turns TestAgentCacheMemoryEnvtest on and says how many Services it creates.
const cacheMemoryEnv = "IPVS_CACHE_MEMORY_SERVICES"

// TestAgentCacheMemoryEnvtest measures, against a real kube-apiserver, the heap a manager's cache retains
// once it has synced the agent's informers (Nodes, Services, EndpointSlices with the agent's index), first
// without and then with agent.CacheOptions. It creates the objects through the API (minutes for 10,000
// Services), so it only runs when asked:
//
//	IPVS_CACHE_MEMORY_SERVICES=10000 KUBEBUILDER_ASSETS=$PWD/bin/k8s/1.37.1 \
//	  go test -run TestAgentCacheMemoryEnvtest -v -timeout 30m ./controllers/agent/
func TestAgentCacheMemoryEnvtest(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv(cacheMemoryEnv))
	if n <= 0 {
		t.Skipf("set %s=10000 to measure", cacheMemoryEnv)
	}
	ctrl.SetLogger(logr.Discard())
	env := &envtest.Environment{}
	env.ControlPlane.GetAPIServer().Configure().Set("service-cluster-ip-range", "10.96.0.0/16")
	cfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = env.Stop() }()
	cfg.QPS, cfg.Burst = 2000, 4000
	c, err := client.New(cfg, client.Options{Scheme: clientgoscheme.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	start := time.Now()
	populate(ctx, t, c, n)
	t.Logf("created %d Services, %d EndpointSlices, %d Nodes in %s", n, n, benchNodes, time.Since(start).Round(time.Second))

	for _, mode := range []struct {
		name string
		opts cache.Options
	}{{"untransformed", cache.Options{}}, {"agent.CacheOptions", agent.CacheOptions()}} {
		retained := syncedCacheHeap(ctx, t, cfg, mode.opts, n)
		t.Logf("%s: %.1f MiB retained by the synced cache for %d Services: %.0f B per Service",
			mode.name, float64(retained)/(1<<20), n, float64(retained)/float64(n))
	}
}

// populate creates the benchmark's objects through the API, with a few workers.
func populate(ctx context.Context, t *testing.T, c client.Client, n int) {
	t.Helper()
	for i := range 100 {
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("ns-%03d", i)}}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range benchNodes {
		node := apiNode(i)
		clearServerFields(&node.ObjectMeta)
		if err := c.Create(ctx, node); err != nil {
			t.Fatal(err)
		}
	}
	work := make(chan int)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for i := range work {
				svc := apiService(i)
				clearServerFields(&svc.ObjectMeta)
				svc.Spec.ClusterIP, svc.Spec.ClusterIPs = "", nil // allocated by the API server
				err := c.Create(ctx, svc)
				if err == nil {
					es := apiEndpointSlice(svc, i, benchEndpoints)
					clearServerFields(&es.ObjectMeta)
					es.OwnerReferences[0].UID = svc.UID
					err = c.Create(ctx, es)
				}
				if err != nil {
					select {
					case errs <- fmt.Errorf("object %d: %w", i, err):
					default:
					}
				}
			}
		})
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
}

func clearServerFields(m *metav1.ObjectMeta) {
	m.UID, m.ResourceVersion, m.ManagedFields, m.CreationTimestamp, m.Generation = "", "", nil, metav1.Time{}, 0
	if m.GenerateName != "" {
		m.Name = "" // the API server names it, as for the EndpointSlice controller's slices
	}
}

// syncedCacheHeap starts a manager with opts, syncs the agent's informers, and returns how much HeapInuse
// grew after a full GC; the manager is stopped before it returns.
func syncedCacheHeap(ctx context.Context, t *testing.T, cfg *rest.Config, opts cache.Options, n int) uint64 {
	t.Helper()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{Scheme: clientgoscheme.Scheme, Cache: opts, Metrics: metricsserver.Options{BindAddress: "0"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	if err := agent.IndexEndpointSlices(ctx, mgr.GetFieldIndexer()); err != nil {
		t.Fatal(err)
	}
	for _, o := range []client.Object{&corev1.Node{}, &corev1.Service{}, &discoveryv1.EndpointSlice{}} {
		if _, err := mgr.GetCache().GetInformer(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		t.Fatal("cache did not sync")
	}
	list := &discoveryv1.EndpointSliceList{}
	if err := mgr.GetCache().List(ctx, list, client.UnsafeDisableDeepCopy); err != nil || len(list.Items) < n {
		t.Fatalf("cache holds %d EndpointSlices (%v), want at least %d", len(list.Items), err, n)
	}
	list = nil
	runtime.GC()
	runtime.ReadMemStats(&after)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	if after.HeapInuse < before.HeapInuse {
		t.Fatalf("heap shrank: %d -> %d", before.HeapInuse, after.HeapInuse)
	}
	return after.HeapInuse - before.HeapInuse
}
