// Package operator holds the operator's reconcilers: the agent DaemonSet (rendered, applied, restored when
// edited or deleted) and the status of ServicePolicies (the operator is its only writer).
//
// RBAC: `make manifests` turns the markers of this package into config/rbac/role.yaml, a ClusterRole
// manager-role for what spans namespaces (ServicePolicies, their status, Services, events) and a Role
// manager-role in the operator's namespace for what lives only there (the agent DaemonSet, the leader
// election Lease). The Role's namespace in the markers is the default install namespace; kustomize's
// namespace transformer, or OLM's install namespace, overrides it.
package operator

// Leader election (client-go's LeaseLock) only gets, creates and updates its Lease.
// +kubebuilder:rbac:groups=coordination.k8s.io,namespace=ipvs-operator-system,resources=leases,verbs=get;create;update
