package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Scheduler is an IPVS scheduling algorithm, named as `ipvsadm -s` names it.
// +kubebuilder:validation:Enum=rr;wrr;lc;wlc;sh;dh;mh;sed;nq
type Scheduler string

// The schedulers the kernel offers (modules ip_vs_<name>).
const (
	SchedulerRoundRobin              Scheduler = "rr"
	SchedulerWeightedRoundRobin      Scheduler = "wrr"
	SchedulerLeastConnection         Scheduler = "lc"
	SchedulerWeightedLeastConnection Scheduler = "wlc"
	SchedulerSourceHashing           Scheduler = "sh"
	SchedulerDestinationHashing      Scheduler = "dh"
	SchedulerMaglevHashing           Scheduler = "mh"
	SchedulerShortestExpectedDelay   Scheduler = "sed"
	SchedulerNeverQueue              Scheduler = "nq"
	DefaultScheduler                           = SchedulerRoundRobin
	DefaultDrainTimeoutSeconds       int32     = 30
	MaxDrainTimeoutSeconds           int32     = 3600
	ServiceProxyNameLabel                      = "service.kubernetes.io/service-proxy-name"
	ServiceProxyName                           = "ipvs-operator"
)

// Schedulers lists every valid Scheduler, in the order the CRD's enum names them.
var Schedulers = []Scheduler{
	SchedulerRoundRobin, SchedulerWeightedRoundRobin, SchedulerLeastConnection, SchedulerWeightedLeastConnection,
	SchedulerSourceHashing, SchedulerDestinationHashing, SchedulerMaglevHashing, SchedulerShortestExpectedDelay,
	SchedulerNeverQueue,
}

// DrainSpec says how a real server leaves rotation.
type DrainSpec struct {
	// timeoutSeconds is how long a TCP real server whose endpoint stopped being usable stays at weight 0
	// while its connections drain, before it is deleted. 0 deletes it at once. UDP and SCTP real servers are
	// always deleted at once.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=3600
	// +kubebuilder:default=30
	// +optional
	TimeoutSeconds *int32 `json:"timeoutSeconds,omitempty"`
}

// ServicePolicySpec chooses how IPVS balances the Services it selects.
// The API server checks label selector operators itself, so a typo is refused at apply time instead of
// silently selecting nothing.
// +kubebuilder:validation:XValidation:rule="!has(self.selector.matchExpressions) || self.selector.matchExpressions.all(e, e.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'])",message="selector.matchExpressions[].operator must be one of In, NotIn, Exists, DoesNotExist",fieldPath=".selector.matchExpressions"
// +kubebuilder:validation:XValidation:rule="!has(self.selector.matchExpressions) || self.selector.matchExpressions.all(e, e.operator in ['In', 'NotIn'] ? (has(e.values) && size(e.values) > 0) : (!has(e.values) || size(e.values) == 0))",message="selector.matchExpressions[].values must be non-empty for In and NotIn, and empty for Exists and DoesNotExist",fieldPath=".selector.matchExpressions"
type ServicePolicySpec struct {
	// selector selects Services in this policy's namespace. An empty selector selects every Service in the
	// namespace.
	// +required
	Selector *metav1.LabelSelector `json:"selector"`

	// scheduler is the IPVS scheduler for the selected Services' virtual servers.
	// +kubebuilder:default=rr
	// +optional
	Scheduler Scheduler `json:"scheduler,omitempty"`

	// drain says how real servers leave rotation.
	// +optional
	Drain *DrainSpec `json:"drain,omitempty"`
}

// Condition types of a ServicePolicy.
const (
	// ConditionReady is true when the policy is valid and governs at least one Service. It is false with
	// reason NoServicesSelected when it selects none, InvalidSelector when its selector is invalid, and
	// ConflictingPolicy when every Service it selects is governed by an older policy.
	ConditionReady = "Ready"
	// ConditionConflicted is true when some selected Services are governed by an older policy instead.
	ConditionConflicted = "Conflicted"
)

// Condition reasons of a ServicePolicy.
const (
	ReasonApplied         = "Applied"
	ReasonNoServices      = "NoServicesSelected"
	ReasonInvalidSelector = "InvalidSelector"
	ReasonInvalidSpec     = "InvalidSpec"
	ReasonConflict        = "ConflictingPolicy"
	ReasonNoConflict      = "NoConflict"
)

// ServicePolicyStatus is the observed state of a ServicePolicy. The operator is its only writer.
type ServicePolicyStatus struct {
	// conditions describe the policy's state: Ready, Conflicted.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// services are the names of the Services this policy currently applies to, sorted.
	// +listType=set
	// +optional
	Services []string `json:"services,omitempty"`

	// serviceCount is len(services), for the printer column (0 is shown, not left blank).
	// +optional
	ServiceCount int32 `json:"serviceCount"`

	// observedGeneration is the generation the status was computed from.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// ServicePolicy chooses, for the Services it selects, how the kernel's IPVS load balancer serves them.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=svcpol,categories=ipvs
// +kubebuilder:printcolumn:name="Scheduler",type=string,JSONPath=`.spec.scheduler`
// +kubebuilder:printcolumn:name="Services",type=integer,JSONPath=`.status.serviceCount`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ServicePolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec ServicePolicySpec `json:"spec"`

	// +optional
	Status ServicePolicyStatus `json:"status,omitempty"`
}

// ServicePolicyList is a list of ServicePolicies.
// +kubebuilder:object:root=true
type ServicePolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ServicePolicy `json:"items"`
}

// SchedulerOrDefault returns the policy's scheduler, or the API default when unset.
func (s *ServicePolicySpec) SchedulerOrDefault() Scheduler {
	if s.Scheduler == "" {
		return DefaultScheduler
	}
	return s.Scheduler
}

// DrainTimeoutSeconds returns the policy's drain timeout, or the API default when unset.
func (s *ServicePolicySpec) DrainTimeoutSeconds() int32 {
	if s.Drain == nil || s.Drain.TimeoutSeconds == nil {
		return DefaultDrainTimeoutSeconds
	}
	return *s.Drain.TimeoutSeconds
}
