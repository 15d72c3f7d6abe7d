package agent_test

import (
	"encoding/json"
	"runtime"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	toolscache "k8s.io/client-go/tools/cache"

	"github.com/ipvs-operator/ipvs-operator/controllers/agent"
)

const (
	benchServices  = 10_000
	benchEndpoints = 5
	benchNodes     = 100
)

// BenchmarkAgentCacheMemory measures the heap an agent's informers retain for 10,000 Services with one
// EndpointSlice of 5 endpoints each and 100 Nodes, with and without the agent's cache transforms. Each
// object is decoded from JSON, as an informer decodes a watch event (so its strings are its own), then
// transformed (or not) and added to a client-go indexer with the indexes controller-runtime's cache has.
// The figure is the growth of HeapInuse after a full GC, while the stores are alive.
//
//	go test -run '^$' -bench BenchmarkAgentCacheMemory -benchtime 1x ./controllers/agent/
func BenchmarkAgentCacheMemory(b *testing.B) {
	for _, bc := range []struct {
		name                  string
		node, service, slices toolscache.TransformFunc
	}{
		{name: "untransformed"},
		{name: "managedFields-stripped-only", node: stripManagedFields, service: stripManagedFields, slices: stripManagedFields},
		{name: "agent-transforms", node: agent.TransformNode, service: agent.TransformService, slices: agent.TransformEndpointSlice},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var retained uint64
			for b.Loop() {
				retained = retainedHeap(b, func() any { return fillStores(b, bc.node, bc.service, bc.slices) })
			}
			b.ReportMetric(float64(retained)/(1<<20), "MiB-retained")
			b.ReportMetric(float64(retained)/benchServices, "B/Service")
			b.Logf("%s: %.1f MiB retained for %d Services (+%d EndpointSlices of %d endpoints, %d Nodes): %.0f B per Service",
				bc.name, float64(retained)/(1<<20), benchServices, benchServices, benchEndpoints, benchNodes, float64(retained)/benchServices)
		})
	}
}

// stripManagedFields is controller-runtime's cache.TransformStripManagedFields, the DefaultTransform.
var stripManagedFields = agent.CacheOptions().DefaultTransform

// retainedHeap returns how much HeapInuse grew, after a full GC, while what fill returns is alive.
func retainedHeap(b *testing.B, fill func() any) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	kept := fill()
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(kept)
	if after.HeapInuse < before.HeapInuse {
		b.Fatalf("heap shrank: %d -> %d", before.HeapInuse, after.HeapInuse)
	}
	return after.HeapInuse - before.HeapInuse
}

// fillStores builds the three informer stores; a nil transform keeps objects whole.
func fillStores(b *testing.B, node, service, slices toolscache.TransformFunc) []toolscache.Indexer {
	nsIndex := toolscache.Indexers{toolscache.NamespaceIndex: toolscache.MetaNamespaceIndexFunc}
	nodes := toolscache.NewIndexer(toolscache.MetaNamespaceKeyFunc, nsIndex)
	services := toolscache.NewIndexer(toolscache.MetaNamespaceKeyFunc, nsIndex)
	sliceStore := toolscache.NewIndexer(toolscache.MetaNamespaceKeyFunc, toolscache.Indexers{
		toolscache.NamespaceIndex: toolscache.MetaNamespaceIndexFunc,
		// As controller-runtime indexes the field agent.IndexEndpointSlices registers.
		"field:ipvs-operator.serviceName": func(o any) ([]string, error) {
			es := o.(*discoveryv1.EndpointSlice)
			return []string{es.Namespace + "/" + es.Labels[discoveryv1.LabelServiceName], "__all_namespaces/" + es.Labels[discoveryv1.LabelServiceName]}, nil
		},
	})
	for i := range benchNodes {
		add(b, nodes, node, apiNode(i), &corev1.Node{})
	}
	for i := range benchServices {
		svc := apiService(i)
		add(b, services, service, svc, &corev1.Service{})
		add(b, sliceStore, slices, apiEndpointSlice(svc, i, benchEndpoints), &discoveryv1.EndpointSlice{})
	}
	return []toolscache.Indexer{nodes, services, sliceStore}
}

// add round-trips obj through JSON into into, transforms it and stores it.
func add(b *testing.B, store toolscache.Indexer, transform toolscache.TransformFunc, obj, into any) {
	data, err := json.Marshal(obj)
	if err != nil {
		b.Fatal(err)
	}
	if err := json.Unmarshal(data, into); err != nil {
		b.Fatal(err)
	}
	stored := into
	if transform != nil {
		if stored, err = transform(into); err != nil {
			b.Fatal(err)
		}
	}
	if err := store.Add(stored); err != nil {
		b.Fatal(err)
	}
}
