package agent

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/ipvs-operator/ipvs-operator/ipvs/plan"
	"github.com/ipvs-operator/ipvs-operator/ipvs/syncer"
)

// Every agent metric is named ipvs_operator_agent_*.
const (
	metricsNamespace = "ipvs_operator"
	metricsSubsystem = "agent"
)

// Metric names follow kube-proxy's (kubeproxy_sync_proxy_rules_duration_seconds,
// kubeproxy_network_programming_duration_seconds) so existing dashboards translate directly.
var (
	metricSyncDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: "sync_duration_seconds",
		Help:    "Time to compute and program one Service's IPVS state.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
	})
	metricSyncErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: "sync_errors_total",
		Help: "Service syncs that failed to program the kernel.",
	})
	metricProgrammingLatency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: "network_programming_duration_seconds",
		Help:    "Time from an EndpointSlice change (its last-change-trigger-time) to the kernel holding it.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
	})
	metricAuditDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: "audit_duration_seconds",
		Help:    "Time of a full re-read of the kernel that repairs drift.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
	})
)

// observeProgrammingLatency records, like kube-proxy, the time since the newest trigger of the Service's
// EndpointSlices (the endpoints controller stamps the annotation when a Pod or Service change caused it).
func observeProgrammingLatency(now time.Time, slices []*discoveryv1.EndpointSlice) {
	var newest time.Time
	for _, s := range slices {
		t, err := time.Parse(time.RFC3339Nano, s.Annotations[corev1EndpointsLastChangeTriggerTime])
		if err == nil && t.After(newest) {
			newest = t
		}
	}
	if !newest.IsZero() {
		metricProgrammingLatency.Observe(now.Sub(newest).Seconds())
	}
}

// corev1EndpointsLastChangeTriggerTime is corev1.EndpointsLastChangeTriggerTime, which the EndpointSlice
// controller also sets on slices.
const corev1EndpointsLastChangeTriggerTime = "endpoints.kubernetes.io/last-change-trigger-time"

var (
	metricKernelOps = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: "kernel_operations_total",
		Help: "Kernel operations (IPVS and VIP changes) by operation and result.",
	}, []string{"operation", "result"})
	metricVirtualServers = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: "virtual_servers",
		Help: "IPVS virtual servers the agent owns on this node.",
	})
	metricRealServers = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: "real_servers",
		Help: "IPVS real servers the agent owns on this node, by state: active (weight > 0) or draining (weight 0).",
	}, []string{"state"})
)

var (
	metricDriftDetections = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: "drift_detections_total",
		Help: "Times the drift canary found the kernel had lost the agent's state, by what was lost: " +
			"interface (dummy interface gone or down), nftables (table gone), ipvs (virtual servers flushed).",
	}, []string{"reason"})
	metricAuditFindings = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: "audit_findings_total",
		Help: "What audits found different from what the agent programmed, and repaired, by kind: service " +
			"(a Service's virtual servers, real servers or VIPs), orphan (a virtual server on a VIP no Service " +
			"claims), vip (an unclaimed VIP), element (an nftables set element missing or unneeded).",
	}, []string{"kind"})
	metricAuditRepairOps = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: "audit_repair_operations_total",
		Help: "Kernel operations (IPVS and VIP changes) made by audits to repair drift.",
	})
)

// RegisterMetrics registers every agent metric on reg: controller-runtime's metrics.Registry in the agent's
// main (served on --metrics-bind-address) and in test suites that read them. Explicit rather than in init(),
// so importing the package registers nothing and a second registry (a test's own) can be used. Call it once
// per registry: a second call returns prometheus.AlreadyRegisteredError.
func RegisterMetrics(reg prometheus.Registerer) error {
	for _, c := range append([]prometheus.Collector{
		metricSyncDuration, metricSyncErrors, metricProgrammingLatency, metricAuditDuration,
		metricKernelOps, metricVirtualServers, metricRealServers,
		metricDriftDetections, metricAuditFindings, metricAuditRepairOps,
		metricServicesHeld, metricTakeoverLeftovers,
	}, healthCollectors...) {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// EngineMetrics backs the sync engine's counters and gauges with the agent's Prometheus metrics (see
// RegisterMetrics).
type EngineMetrics struct{}

// OpDone implements ipvs/syncer.Metrics.
func (EngineMetrics) OpDone(kind plan.Kind, err error) {
	result := "success"
	if err != nil {
		result = "error"
	}
	metricKernelOps.WithLabelValues(kind.String(), result).Inc()
}

// SetVirtualServers implements ipvs/syncer.Metrics.
func (EngineMetrics) SetVirtualServers(n int) { metricVirtualServers.Set(float64(n)) }

// SetRealServers implements ipvs/syncer.Metrics.
func (EngineMetrics) SetRealServers(active, draining int) {
	metricRealServers.WithLabelValues("active").Set(float64(active))
	metricRealServers.WithLabelValues("draining").Set(float64(draining))
}

// DriftDetected implements ipvs/syncer.Metrics.
func (EngineMetrics) DriftDetected(d syncer.Drift) {
	metricDriftDetections.WithLabelValues(string(d)).Inc()
}

// AuditDone implements ipvs/syncer.Metrics.
func (EngineMetrics) AuditDone(r syncer.AuditReport) {
	for kind, n := range map[string]int{"service": r.Services, "orphan": r.Orphans, "vip": r.VIPs, "element": r.Elements} {
		metricAuditFindings.WithLabelValues(kind).Add(float64(n))
	}
	metricAuditRepairOps.Add(float64(r.Ops))
}
