package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Labels of a HealthCheckStatus: the policy and the node it reports on, so that the operator (one policy's
// reports) and an agent (its own) can select them.
const (
	HealthCheckStatusPolicyLabel = "lb.ipvs-operator.dev/policy"
	HealthCheckStatusNodeLabel   = "lb.ipvs-operator.dev/node"
	// MaxHealthCheckStatusEndpoints bounds the endpoints one report lists (the count is always exact).
	MaxHealthCheckStatusEndpoints = 100
)

// TakenOutEndpoint is a real server a node keeps out of rotation because its endpoint fails its check.
type TakenOutEndpoint struct {
	// service is the Service's name.
	Service string `json:"service"`
	// endpoint is the real server, "IP:targetPort".
	Endpoint string `json:"endpoint"`
	// target is what failed: "tcp://IP:port" or "http://IP:port/path".
	Target string `json:"target"`
}

// HealthCheckReport is what one node's health checks did to the Services of one ServicePolicy.
type HealthCheckReport struct {
	// node is the node whose agent probes and writes this report.
	Node string `json:"node"`
	// policy is the ServicePolicy (in this namespace) whose health check this is.
	Policy string `json:"policy"`
	// takenOutCount is how many real servers this node keeps out (weight 0 or removed).
	TakenOutCount int32 `json:"takenOutCount"`
	// takenOut lists them, sorted, at most 100.
	// +kubebuilder:validation:MaxItems=100
	// +listType=atomic
	// +optional
	TakenOut []TakenOutEndpoint `json:"takenOut,omitempty"`
	// panicServices are the Services whose every endpoint fails on this node, served anyway (panic mode).
	// +listType=set
	// +optional
	PanicServices []string `json:"panicServices,omitempty"`
}

// HealthCheckStatus is one node's report on one ServicePolicy's health checks, named <policy>.<node>. Only
// that node's agent writes it (it exists only while the node has something to report, and is owned by the
// Node, so it goes with it); the operator sums the reports into the policy's Degraded condition.
// +kubebuilder:object:root=true
// +kubebuilder:resource:shortName=hcstatus,categories=ipvs
// +kubebuilder:printcolumn:name="Policy",type=string,JSONPath=`.report.policy`
// +kubebuilder:printcolumn:name="Node",type=string,JSONPath=`.report.node`
// +kubebuilder:printcolumn:name="Out",type=integer,JSONPath=`.report.takenOutCount`
// +kubebuilder:printcolumn:name="Panic",type=string,JSONPath=`.report.panicServices`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type HealthCheckStatus struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// report is the node's report; the whole object is the agent's, so there is no spec.
	// +required
	Report HealthCheckReport `json:"report"`
}

// HealthCheckStatusList is a list of HealthCheckStatuses.
// +kubebuilder:object:root=true
type HealthCheckStatusList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []HealthCheckStatus `json:"items"`
}
