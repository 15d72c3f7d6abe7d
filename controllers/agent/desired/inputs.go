package desired

import (
	"maps"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
)

// InputsChanged reports whether an update of a Service can change what ForService computes for it, or which
// policy governs it: its labels (scope, policy selection) or its spec (type, ClusterIPs, ports,
// sessionAffinity and its timeout, internalTrafficPolicy, ...). A reconciler filters Service updates with it.
//
// It compares the whole spec rather than the fields ForService reads today, so a field the translation
// learns to read later can never be missed; an update that changes some other spec field costs one
// translation and no kernel operation. Generation is no help: the API server does not bump
// metadata.generation of Services on spec changes (kubernetes#113961). Status and annotation updates are
// ignored.
func InputsChanged(oldSvc, newSvc *corev1.Service) bool {
	if oldSvc == nil || newSvc == nil {
		return oldSvc != newSvc
	}
	return !maps.Equal(oldSvc.Labels, newSvc.Labels) ||
		!oldSvc.DeletionTimestamp.Equal(newSvc.DeletionTimestamp) ||
		!equality.Semantic.DeepEqual(oldSvc.Spec, newSvc.Spec)
}
