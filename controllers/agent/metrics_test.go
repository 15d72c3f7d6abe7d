package agent

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ipvs-operator/ipvs-operator/controllers/agent/health"
	"github.com/ipvs-operator/ipvs-operator/ipvs/syncer"
)

// TestRegisterMetrics pins the metric names dashboards graph, and that registration is explicit: a fresh
// registry holds exactly these after RegisterMetrics, and a second registration on it is refused.
func TestRegisterMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	if err := RegisterMetrics(reg); err != nil {
		t.Fatal(err)
	}
	// Vectors appear only once they have a child: give each one.
	m := EngineMetrics{}
	m.OpDone(0, nil)
	m.SetRealServers(1, 0)
	m.DriftDetected(syncer.Drift("ipvs"))
	m.AuditDone(syncer.AuditReport{})
	metricServicesHeld.WithLabelValues(HeldDependencyError).Set(0)
	observeProgrammingLatency(time.Now(), nil)
	observeProbe(health.Target{Check: health.Check{Protocol: health.TCP}}, nil, time.Millisecond)

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := make([]string, 0, len(mfs))
	for _, mf := range mfs {
		got = append(got, mf.GetName())
	}
	want := []string{
		"ipvs_operator_agent_audit_duration_seconds",
		"ipvs_operator_agent_audit_findings_total",
		"ipvs_operator_agent_audit_repair_operations_total",
		"ipvs_operator_agent_drift_detections_total",
		"ipvs_operator_agent_health_panic_services",
		"ipvs_operator_agent_health_probe_duration_seconds",
		"ipvs_operator_agent_health_probes_total",
		"ipvs_operator_agent_health_real_servers_out",
		"ipvs_operator_agent_health_targets",
		"ipvs_operator_agent_health_unhealthy_targets",
		"ipvs_operator_agent_kernel_operations_total",
		"ipvs_operator_agent_network_programming_duration_seconds",
		"ipvs_operator_agent_real_servers",
		"ipvs_operator_agent_services_held",
		"ipvs_operator_agent_sync_duration_seconds",
		"ipvs_operator_agent_sync_errors_total",
		"ipvs_operator_agent_takeover_leftovers",
		"ipvs_operator_agent_virtual_servers",
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("registered metrics\n%v\nwant\n%v", got, want)
	}

	var already prometheus.AlreadyRegisteredError
	if err := RegisterMetrics(reg); !errors.As(err, &already) {
		t.Errorf("second RegisterMetrics on one registry = %v, want AlreadyRegisteredError", err)
	}
}
