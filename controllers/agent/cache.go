package agent

import (
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// CacheOptions are the agent's informer cache settings: every node runs an agent that watches every Service,
// EndpointSlice and Node of the cluster, so what each object costs in memory is paid O(nodes x objects)
// across the cluster. Like kube-proxy, the agent keeps only what it reads:
//   - everywhere: no managedFields (often the largest part of an object, never read);
//   - Nodes: the name and pod CIDRs (PodCIDRs and its predicate read nothing else);
//   - Services: no status and no annotations; the whole spec, labels and deletionTimestamp stay, because
//     desired.InputsChanged compares them and desired.ForService reads them;
//   - EndpointSlices: the service-name label, the last-change-trigger-time annotation (the programming
//     latency metric), addressType, ports, and each endpoint's addresses, conditions and nodeName.
//
// The transforms run before an object enters the cache, so Get and List through the manager's client return
// the reduced objects: a new reader of some other field must extend the transform (its tests say what is kept).
func CacheOptions() cache.Options {
	return cache.Options{
		DefaultTransform: cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Node{}:               {Transform: TransformNode},
			&corev1.Service{}:            {Transform: TransformService},
			&discoveryv1.EndpointSlice{}: {Transform: TransformEndpointSlice},
		},
	}
}

// Every transform below is idempotent (client-go's FIFO may hand it an object it already transformed) and
// passes anything that is not its type through unchanged (tombstones never reach it, but it costs nothing).
var (
	_ toolscache.TransformFunc = TransformNode
	_ toolscache.TransformFunc = TransformService
	_ toolscache.TransformFunc = TransformEndpointSlice
)

// cachedMeta keeps what the cache and the agent's readers use of an object's metadata: its identity, its
// resourceVersion (informers and the client compare it), generation and deletionTimestamp.
func cachedMeta(m *metav1.ObjectMeta) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name:              m.Name,
		Namespace:         m.Namespace,
		UID:               m.UID,
		ResourceVersion:   m.ResourceVersion,
		Generation:        m.Generation,
		CreationTimestamp: m.CreationTimestamp,
		DeletionTimestamp: m.DeletionTimestamp,
	}
}

// TransformNode reduces a Node to its name and pod CIDRs: its status (images, conditions, addresses) and
// labels are most of a Node and the agent reads none of them.
func TransformNode(in any) (any, error) {
	n, ok := in.(*corev1.Node)
	if !ok {
		return in, nil
	}
	return &corev1.Node{
		TypeMeta:   n.TypeMeta,
		ObjectMeta: cachedMeta(&n.ObjectMeta),
		Spec:       corev1.NodeSpec{PodCIDR: n.Spec.PodCIDR, PodCIDRs: n.Spec.PodCIDRs},
	}, nil
}

// TransformService drops a Service's status, annotations (kubectl's last-applied-configuration can be as
// large as the rest of it) and managedFields. Labels, spec and deletionTimestamp stay whole: they are what
// desired.InputsChanged compares, and spec is kept whole so a field the translation learns to read later
// cannot be missing from the cache.
func TransformService(in any) (any, error) {
	s, ok := in.(*corev1.Service)
	if !ok {
		return in, nil
	}
	meta := cachedMeta(&s.ObjectMeta)
	meta.Labels = s.Labels
	return &corev1.Service{TypeMeta: s.TypeMeta, ObjectMeta: meta, Spec: s.Spec}, nil
}

// TransformEndpointSlice keeps what desired.ForService, the service-name index and the latency metric read
// of an EndpointSlice (of its labels: the Service's name and service.kubernetes.io/headless). Dropped: targetRef, hostname, zone and hints of every endpoint, the Service's labels
// that the EndpointSlice controller copies onto its slices, ownerReferences and managedFields.
func TransformEndpointSlice(in any) (any, error) {
	es, ok := in.(*discoveryv1.EndpointSlice)
	if !ok {
		return in, nil
	}
	meta := cachedMeta(&es.ObjectMeta)
	for _, l := range []string{discoveryv1.LabelServiceName, corev1.IsHeadlessService} {
		if v, ok := es.Labels[l]; ok {
			if meta.Labels == nil {
				meta.Labels = map[string]string{}
			}
			meta.Labels[l] = v
		}
	}
	if t, ok := es.Annotations[corev1EndpointsLastChangeTriggerTime]; ok {
		meta.Annotations = map[string]string{corev1EndpointsLastChangeTriggerTime: t}
	}
	out := &discoveryv1.EndpointSlice{
		TypeMeta:    es.TypeMeta,
		ObjectMeta:  meta,
		AddressType: es.AddressType,
		Ports:       es.Ports,
	}
	if es.Endpoints != nil {
		out.Endpoints = make([]discoveryv1.Endpoint, len(es.Endpoints))
		for i, ep := range es.Endpoints {
			out.Endpoints[i] = discoveryv1.Endpoint{Addresses: ep.Addresses, Conditions: ep.Conditions, NodeName: ep.NodeName}
		}
	}
	return out, nil
}
