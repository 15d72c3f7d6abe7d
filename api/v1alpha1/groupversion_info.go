// Package v1alpha1 contains the API of ipvs-operator: the ServicePolicy, which chooses how the kernel's IPVS
// load balancer serves the Services it selects.
// +kubebuilder:object:generate=true
// +groupName=lb.ipvs-operator.dev
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of this API.
	GroupVersion = schema.GroupVersion{Group: "lb.ipvs-operator.dev", Version: "v1alpha1"}

	// SchemeBuilder adds this API's types to a scheme. It is apimachinery's builder rather than
	// controller-runtime's (deprecated), so importing the API pulls in apimachinery only.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds this API's types to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

// addKnownTypes registers the kinds of this group version, and the meta/v1 options types
// (ListOptions, ...) clients use with it.
func addKnownTypes(scheme *runtime.Scheme) error {
	scheme.AddKnownTypes(GroupVersion, &ServicePolicy{}, &ServicePolicyList{}, &HealthCheckStatus{}, &HealthCheckStatusList{})
	metav1.AddToGroupVersion(scheme, GroupVersion)
	return nil
}
