// Package health probes, from this node, the endpoints that ServicePolicies with spec.healthCheck ask for,
// and keeps a healthy/unhealthy verdict per probe target that the Service translation reads.
//
// It is split like the rest of the agent: the verdict logic (State.Observe) is pure and table-tested; the
// Prober schedules probes and keeps the verdicts; the probes themselves (Probe: a TCP connect or an HTTP GET)
// are the only I/O, behind a function the tests and the benchmark can replace.
//
// The agent runs in the node's host network namespace (hostNetwork), so its probes take the path the node's
// own traffic to a pod takes: a pod that is Ready but unreachable from this node is taken out on this node
// only.
package health

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Protocol is how a target is probed.
type Protocol string

// The probe kinds (api/v1alpha1 HealthCheckProtocol).
const (
	TCP  Protocol = "TCP"
	HTTP Protocol = "HTTP"
)

// Check is how and how often a target is probed. It is comparable, so that a Target can key a map: two
// Services whose policies ask for the same check of the same (address, port) share one probe.
type Check struct {
	Protocol Protocol
	// Path is the HTTP path (HTTP only).
	Path string
	// Statuses are the HTTP status ranges that pass, canonical "min-max[,min-max...]" (HTTP only; a string
	// keeps Check comparable). Empty means 200-399.
	Statuses string
	Period   time.Duration
	Timeout  time.Duration
	// UnhealthyThreshold is how many failures in a row take a healthy target out.
	UnhealthyThreshold int32
	// HealthyThreshold is how many successes in a row put an unhealthy target back.
	HealthyThreshold int32
}

// StatusOK reports whether an HTTP status code passes the check.
func (c Check) StatusOK(code int) bool {
	ranges := c.Statuses
	if ranges == "" {
		return code >= 200 && code <= 399
	}
	for ranges != "" {
		var r string
		r, ranges, _ = strings.Cut(ranges, ",")
		lo, hi, _ := strings.Cut(r, "-")
		from, err1 := strconv.Atoi(lo)
		to, err2 := strconv.Atoi(hi)
		if err1 == nil && err2 == nil && code >= from && code <= to {
			return true
		}
	}
	return false
}

// Target is one thing probed: an endpoint's address, the port probed on it, and the check.
type Target struct {
	Addr netip.Addr
	Port uint16
	Check
}

// AddrPort is where the probe goes.
func (t Target) AddrPort() netip.AddrPort { return netip.AddrPortFrom(t.Addr, t.Port) }

func (t Target) String() string {
	if t.Protocol == HTTP {
		return fmt.Sprintf("http://%s%s", t.AddrPort(), t.Path)
	}
	return fmt.Sprintf("tcp://%s", t.AddrPort())
}

// View answers whether a target is unhealthy. A target nobody registered, or registered but not yet found
// failing, is healthy: new endpoints trust the kubelet's readiness.
type View interface {
	Unhealthy(Target) bool
}
