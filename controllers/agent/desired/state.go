// Package desired translates one Kubernetes Service, its EndpointSlices and its ServicePolicy into the IPVS
// state this node should hold for it. It is pure: no client, no I/O, no clock; the reconciler fetches the
// objects and the sync engine (ipvs/syncer) programs the result.
package desired

import (
	"time"

	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/ipvs-operator/ipvs-operator/controllers/agent/health"

	"github.com/ipvs-operator/ipvs-operator/ipvs/plan"
)

// State is the desired IPVS state of one Service on this node: VIPs, a virtual server per (ClusterIP, port,
// protocol) with its real servers, and the drain timeout of its TCP real servers. It is plan.Desired, so the
// sync engine takes it as is while package ipvs stays free of Kubernetes types.
type State = plan.Desired

// Labels and defaults. They mirror api/v1alpha1 (ServiceProxyNameLabel, ServiceProxyName,
// DefaultScheduler, DefaultDrainTimeoutSeconds); a test keeps them equal.
const (
	// ProxyNameLabel on a Service names the proxy that serves it; kube-proxy ignores Services carrying it.
	ProxyNameLabel = "service.kubernetes.io/service-proxy-name"
	// ProxyName is this proxy's value of ProxyNameLabel.
	ProxyName = "ipvs-operator"
	// DefaultScheduler is used when neither the Policy nor Options name one.
	DefaultScheduler = "rr"
	// DefaultDrainTimeout is the drain timeout of Services no ServicePolicy governs.
	DefaultDrainTimeout = 30 * time.Second
)

// Policy is how a ServicePolicy wants a Service balanced, already defaulted by the caller (for example
// from ServicePolicySpec.SchedulerOrDefault and DrainTimeoutSeconds).
//
// It is a plain struct rather than the CRD's spec so that this package depends only on core Kubernetes
// types: the translation can be tested and benchmarked without the scheme, and the policy's selection and
// conflict rules (which policy governs a Service) stay with the reconciler that owns them.
type Policy struct {
	// Scheduler is the ipvsadm scheduler name; empty means Options.DefaultScheduler.
	Scheduler string
	// DrainTimeout is how long TCP real servers drain at weight 0; 0 deletes them at once.
	DrainTimeout time.Duration
	// HealthCheck, if set, gates the Service's real servers on active probes (see Translate).
	HealthCheck *HealthCheck
	// SlowStart, if not 0, is the window over which a newly usable real server's weight ramps up (see
	// SlowStart); the caller applies it to Translate's State, since it needs memory and a clock.
	SlowStart time.Duration
}

// HealthCheck is a policy's spec.healthCheck, defaulted.
type HealthCheck struct {
	health.Check
	// Port is the port probed on each endpoint: a number, or the name of a Service port or of a target
	// port; nil means each real server's own target port.
	Port *intstr.IntOrString
}

// Options are the node-wide settings of the translation.
type Options struct {
	// NodeName is this node's name, matched against endpoints' nodeName for internalTrafficPolicy: Local.
	NodeName string
	// DefaultScheduler is the scheduler of Services without a policy; empty means DefaultScheduler.
	DefaultScheduler string
	// ManageAll makes the agent serve every Service not claimed by another proxy, instead of only those
	// labelled ProxyNameLabel=ProxyName.
	ManageAll bool
	// Health holds the probes' verdicts for Services whose policy has a health check; nil: all healthy.
	Health health.View
}
