package agent

import (
	"context"

	discoveryv1 "k8s.io/api/discovery/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// serviceNameField indexes EndpointSlices by the Service they belong to (label kubernetes.io/service-name),
// so fetching one Service's slices is a map lookup, not a scan of the namespace.
const serviceNameField = "ipvs-operator.serviceName"

// IndexEndpointSlices registers the field index the Service reconciler lists slices with.
func IndexEndpointSlices(ctx context.Context, indexer client.FieldIndexer) error {
	return indexer.IndexField(ctx, &discoveryv1.EndpointSlice{}, serviceNameField, func(o client.Object) []string {
		if name := o.GetLabels()[discoveryv1.LabelServiceName]; name != "" {
			return []string{name}
		}
		return nil
	})
}
