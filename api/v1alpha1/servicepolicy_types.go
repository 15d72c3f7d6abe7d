package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
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
// +kubebuilder:validation:XValidation:rule="!has(self.slowStart) || (has(self.scheduler) ? self.scheduler : 'rr') in ['wrr', 'wlc', 'sed', 'nq']",messageExpression="'slowStart needs a scheduler that weighs real servers (wrr, wlc, sed or nq); scheduler ' + (has(self.scheduler) ? self.scheduler : 'rr') + ' ignores weights or rehashes on every change: set spec.scheduler to wrr, wlc, sed or nq, or remove spec.slowStart'",fieldPath=".slowStart"
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

	// healthCheck makes every node's agent probe the endpoints it routes to for the selected Services, on
	// top of the kubelet's readiness: an endpoint that fails unhealthyThreshold probes in a row goes to
	// weight 0 on that node (its connections continue) until it passes healthyThreshold in a row. When every
	// endpoint of a Service port is unhealthy on a node, that node keeps serving all of them (panic mode):
	// the checker never black-holes a Service. Unset: readiness alone decides.
	// +optional
	HealthCheck *HealthCheckSpec `json:"healthCheck,omitempty"`

	// slowStart ramps up the weight of a real server whose endpoint has just become usable (a new or newly
	// Ready pod, or one back from a failed health check), so that a cold pod is not flooded with new
	// connections. Only for schedulers that weigh real servers: wrr, wlc, sed and nq. Unset: full weight
	// at once.
	// +optional
	SlowStart *SlowStartSpec `json:"slowStart,omitempty"`
}

// SlowStartSpec says how a newly usable real server's weight ramps up.
type SlowStartSpec struct {
	// windowSeconds is how long the ramp takes: the weight starts at a tenth of the full weight and rises
	// in ten equal steps to full at the end of the window. Editing it applies to ramps under way (the
	// weight is a function of the time since the endpoint became usable).
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=3600
	// +required
	WindowSeconds int32 `json:"windowSeconds"`
}

// Slow start bounds, as the CRD states them, and the schedulers it is allowed with.
const (
	MaxSlowStartWindowSeconds int32 = 3600
)

// WeightedSchedulers are the schedulers whose choice between real servers of non-zero weight depends on the
// weights in proportion, so that a ramp means something: wrr (weighted turns), wlc, sed and nq (connections
// per unit of weight; nq picks an idle real server first). rr, lc and dh ignore weights except 0. sh and mh
// do weigh (buckets per unit of weight), but rebuild their hash tables on every weight change, so each step
// of a ramp would move clients and defeat the affinity they are chosen for.
var WeightedSchedulers = []Scheduler{SchedulerWeightedRoundRobin, SchedulerWeightedLeastConnection,
	SchedulerShortestExpectedDelay, SchedulerNeverQueue}

// HealthCheckProtocol is how an endpoint is probed.
// +kubebuilder:validation:Enum=TCP;HTTP
type HealthCheckProtocol string

// The probe kinds.
const (
	// HealthCheckTCP passes when a TCP connection is established within the timeout.
	HealthCheckTCP HealthCheckProtocol = "TCP"
	// HealthCheckHTTP passes when an HTTP GET of path answers, within the timeout, with a status in
	// expectedStatuses.
	HealthCheckHTTP HealthCheckProtocol = "HTTP"
)

// Health check defaults and bounds, as the CRD states them.
const (
	DefaultHealthCheckPeriodSeconds      int32 = 5
	DefaultHealthCheckTimeoutSeconds     int32 = 1
	DefaultHealthCheckUnhealthyThreshold int32 = 3
	DefaultHealthCheckHealthyThreshold   int32 = 2
	DefaultHealthCheckPath                     = "/"
	MinHealthCheckPeriodSeconds          int32 = 1
	MaxHealthCheckPeriodSeconds          int32 = 300
	MaxHealthCheckThreshold              int32 = 100
)

// StatusRange is an inclusive range of HTTP status codes.
// +kubebuilder:validation:XValidation:rule="self.min <= self.max",message="min must not be greater than max"
type StatusRange struct {
	// min is the lowest status code that passes.
	// +kubebuilder:validation:Minimum=100
	// +kubebuilder:validation:Maximum=599
	// +required
	Min int32 `json:"min"`
	// max is the highest status code that passes.
	// +kubebuilder:validation:Minimum=100
	// +kubebuilder:validation:Maximum=599
	// +required
	Max int32 `json:"max"`
}

// HealthCheckSpec says how and how often each endpoint is probed.
// +kubebuilder:validation:XValidation:rule="self.timeoutSeconds < self.periodSeconds",message="timeoutSeconds must be less than periodSeconds",fieldPath=".timeoutSeconds"
// +kubebuilder:validation:XValidation:rule="self.protocol == 'HTTP' || (!has(self.path) && !has(self.expectedStatuses))",message="path and expectedStatuses are only for protocol HTTP",fieldPath=".path"
type HealthCheckSpec struct {
	// protocol is TCP (a connect) or HTTP (a GET of path).
	// +kubebuilder:default=TCP
	// +optional
	Protocol HealthCheckProtocol `json:"protocol,omitempty"`

	// port is the port probed on each endpoint: a number, or the name of a Service port or of a target port
	// (the EndpointSlice's port name). Unset: each real server's own target port.
	// +optional
	Port *intstr.IntOrString `json:"port,omitempty"`

	// path is the HTTP path requested (protocol HTTP only). Defaults to "/" for HTTP.
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:Pattern=`^/`
	// +optional
	Path string `json:"path,omitempty"`

	// expectedStatuses are the HTTP status ranges that pass (protocol HTTP only). Unset: 200-399.
	// +kubebuilder:validation:MaxItems=8
	// +listType=atomic
	// +optional
	ExpectedStatuses []StatusRange `json:"expectedStatuses,omitempty"`

	// periodSeconds is how often each endpoint is probed (jittered by up to 10%).
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=300
	// +kubebuilder:default=5
	// +optional
	PeriodSeconds int32 `json:"periodSeconds,omitempty"`

	// timeoutSeconds is how long one probe may take; it must be less than periodSeconds.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=299
	// +kubebuilder:default=1
	// +optional
	TimeoutSeconds int32 `json:"timeoutSeconds,omitempty"`

	// unhealthyThreshold is how many probes in a row must fail before a healthy endpoint is taken out.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	// +kubebuilder:default=3
	// +optional
	UnhealthyThreshold int32 `json:"unhealthyThreshold,omitempty"`

	// healthyThreshold is how many probes in a row must pass before an unhealthy endpoint is put back.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	// +kubebuilder:default=2
	// +optional
	HealthyThreshold int32 `json:"healthyThreshold,omitempty"`
}

// Condition types of a ServicePolicy.
const (
	// ConditionReady is true when the policy is valid and governs at least one Service. It is false with
	// reason NoServicesSelected when it selects none, InvalidSelector when its selector is invalid, and
	// ConflictingPolicy when every Service it selects is governed by an older policy.
	ConditionReady = "Ready"
	// ConditionConflicted is true when some selected Services are governed by an older policy instead.
	ConditionConflicted = "Conflicted"
	// ConditionDegraded is true when some node keeps endpoints of the policy's Services out of rotation
	// because they fail the health check (reason EndpointsTakenOut), or serves a Service whose every
	// endpoint fails it (reason HealthCheckPanic), as the nodes' HealthCheckStatus reports say.
	ConditionDegraded = "Degraded"
)

// Condition reasons of a ServicePolicy.
const (
	ReasonApplied         = "Applied"
	ReasonNoServices      = "NoServicesSelected"
	ReasonInvalidSelector = "InvalidSelector"
	ReasonInvalidSpec     = "InvalidSpec"
	ReasonConflict        = "ConflictingPolicy"
	ReasonNoConflict      = "NoConflict"
	ReasonTakenOut        = "EndpointsTakenOut"
	ReasonHealthPanic     = "HealthCheckPanic"
	ReasonHealthy         = "Healthy"
	ReasonNoHealthCheck   = "NoHealthCheck"
)

// ServicePolicyStatus is the observed state of a ServicePolicy. The operator is its only writer.
type ServicePolicyStatus struct {
	// conditions describe the policy's state: Ready, Conflicted, Degraded.
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
// +kubebuilder:printcolumn:name="Degraded",type=string,JSONPath=`.status.conditions[?(@.type=="Degraded")].status`
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

// SlowStartWindow returns the policy's slow start window in seconds, or 0 when unset.
func (s *ServicePolicySpec) SlowStartWindow() int32 {
	if s.SlowStart == nil {
		return 0
	}
	return s.SlowStart.WindowSeconds
}

// Defaulted returns the health check with every unset field set to the CRD's default (for objects that
// bypassed the API server's defaulting, e.g. in tests). nil stays nil.
func (h *HealthCheckSpec) Defaulted() *HealthCheckSpec {
	if h == nil {
		return nil
	}
	out := h.DeepCopy()
	if out.Protocol == "" {
		out.Protocol = HealthCheckTCP
	}
	if out.PeriodSeconds == 0 {
		out.PeriodSeconds = DefaultHealthCheckPeriodSeconds
	}
	if out.TimeoutSeconds == 0 {
		out.TimeoutSeconds = DefaultHealthCheckTimeoutSeconds
	}
	if out.UnhealthyThreshold == 0 {
		out.UnhealthyThreshold = DefaultHealthCheckUnhealthyThreshold
	}
	if out.HealthyThreshold == 0 {
		out.HealthyThreshold = DefaultHealthCheckHealthyThreshold
	}
	if out.Protocol == HealthCheckHTTP {
		if out.Path == "" {
			out.Path = DefaultHealthCheckPath
		}
		if len(out.ExpectedStatuses) == 0 {
			out.ExpectedStatuses = []StatusRange{{Min: 200, Max: 399}}
		}
	}
	return out
}
