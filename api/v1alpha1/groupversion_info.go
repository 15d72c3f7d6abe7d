// Package v1alpha1 contains the API of ipvs-operator: the ServicePolicy, which chooses how the kernel's IPVS
// load balancer serves the Services it selects.
// +kubebuilder:object:generate=true
// +groupName=lb.ipvs-operator.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of this API.
	GroupVersion = schema.GroupVersion{Group: "lb.ipvs-operator.dev", Version: "v1alpha1"}

	// SchemeBuilder adds this API's types to a scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds this API's types to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
