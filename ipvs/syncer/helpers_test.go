package syncer

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
	"github.com/ipvs-operator/ipvs-operator/ipvs/fake"
	"github.com/ipvs-operator/ipvs-operator/ipvs/plan"
	"github.com/ipvs-operator/ipvs-operator/test/golden"
)

var t0 = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

// harness is a Syncer over a fake kernel, adopted and ready.
type harness struct {
	t       *testing.T
	ctx     context.Context
	ipvs    *fake.IPVS
	vips    *fake.VIPs
	rules   *fake.Rules
	clock   *clocktesting.FakePassiveClock
	metrics *recordingMetrics
	s       *Syncer
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{t: t, ctx: context.Background(), ipvs: fake.New(), vips: fake.NewVIPs(), rules: fake.NewRules(),
		clock: clocktesting.NewFakePassiveClock(t0)}
	h.restart()
	return h
}

// restart replaces the Syncer with a new one over the same kernel, as an agent restart does, and adopts.
func (h *harness) restart() {
	h.t.Helper()
	h.metrics = &recordingMetrics{ops: map[string]int{}}
	h.s = New(h.ipvs, h.vips, h.rules, h.clock, Options{Metrics: h.metrics, PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}})
	if err := h.s.Adopt(h.ctx); err != nil {
		h.t.Fatalf("Adopt: %v", err)
	}
}

func (h *harness) sync(key string, want plan.Desired) Result {
	h.t.Helper()
	res, err := h.s.SyncService(h.ctx, key, want)
	if err != nil {
		h.t.Fatalf("SyncService(%s): %v", key, err)
	}
	return res
}

// kernelOps returns the fake kernel's calls since the last call, then resets the counters.
func (h *harness) kernelOps() map[fake.Verb]int {
	ops := h.ipvs.Ops()
	if ops == nil {
		ops = map[fake.Verb]int{}
	}
	for v, n := range h.vips.Ops() {
		ops[v] = n
	}
	h.ipvs.ResetOps()
	h.vips.ResetOps()
	h.rules.ResetOps()
	return ops
}

// state renders what the fake kernel holds: VIPs and nftables sets as comments, then `ipvsadm -Sn`.
func (h *harness) state() string {
	h.t.Helper()
	defer h.kernelOps() // reading is not what a test counts
	var b strings.Builder
	vips, err := h.vips.List()
	if err != nil {
		fmt.Fprintf(&b, "# vips: %v\n", err)
	} else {
		fmt.Fprintf(&b, "# vips: %s\n", joinAddrs(vips))
	}
	if els, err := h.rules.Elements(); err != nil {
		fmt.Fprintf(&b, "# nft: %v\n", err)
	} else {
		fmt.Fprintf(&b, "# nft clusterIPs: %s\n# nft endpoints: %s\n# nft ports: %s\n", joinAddrs(els.ClusterIPs), joinAddrs(els.Endpoints), joinKeys(els.Ports))
	}
	vs, err := ipvs.Snapshot(h.ipvs)
	if err != nil {
		h.t.Fatalf("Snapshot: %v", err)
	}
	b.WriteString(ipvs.Render(vs))
	return b.String()
}

func (h *harness) golden(name string) {
	h.t.Helper()
	golden.Check(h.t, filepath.Join("testdata", name+".golden"), []byte(h.state()))
}

func joinAddrs(a []netip.Addr) string {
	s := make([]string, len(a))
	for i, x := range a {
		s[i] = x.String()
	}
	return strings.Join(s, " ")
}

func joinKeys(k []ipvs.ServiceKey) string {
	s := make([]string, len(k))
	for i, x := range k {
		s[i] = x.String()
	}
	return strings.Join(s, ", ")
}

// Desired-state builders.

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func service(drain time.Duration, servers ...ipvs.VirtualServer) plan.Desired {
	d := plan.Desired{DrainTimeout: drain, Servers: servers}
	for _, s := range servers {
		if !slices.Contains(d.VIPs, s.Address) {
			d.VIPs = append(d.VIPs, s.Address)
		}
	}
	slices.SortFunc(d.VIPs, netip.Addr.Compare)
	slices.SortFunc(d.Servers, func(a, b ipvs.VirtualServer) int { return plan.CompareServiceKeys(a.ServiceKey, b.ServiceKey) })
	return d
}

func vs(proto ipvs.Protocol, vipPort string, sched string, dests ...string) ipvs.VirtualServer {
	ap := netip.MustParseAddrPort(vipPort)
	v := ipvs.VirtualServer{Service: ipvs.Service{ServiceKey: ipvs.ServiceKey{Address: ap.Addr(), Port: ap.Port(), Protocol: proto}, Scheduler: sched}}
	for _, d := range dests {
		v.Destinations = append(v.Destinations, ipvs.Destination{DestinationKey: dkey(d), Weight: 1})
	}
	slices.SortFunc(v.Destinations, func(a, b ipvs.Destination) int {
		return plan.CompareDestinationKeys(a.DestinationKey, b.DestinationKey)
	})
	return v
}

func tcp(vipPort string, dests ...string) ipvs.VirtualServer {
	return vs(ipvs.TCP, vipPort, "rr", dests...)
}
func udp(vipPort string, dests ...string) ipvs.VirtualServer {
	return vs(ipvs.UDP, vipPort, "rr", dests...)
}

func dkey(s string) ipvs.DestinationKey {
	ap := netip.MustParseAddrPort(s)
	return ipvs.DestinationKey{Address: ap.Addr(), Port: ap.Port()}
}

func skey(proto ipvs.Protocol, s string) ipvs.ServiceKey {
	ap := netip.MustParseAddrPort(s)
	return ipvs.ServiceKey{Address: ap.Addr(), Port: ap.Port(), Protocol: proto}
}

// recordingMetrics keeps what the Syncer reports.
type recordingMetrics struct {
	mu                        sync.Mutex
	ops                       map[string]int // "kind" or "kind/error"
	servers, active, draining int
	drifts                    []Drift
	audits                    []AuditReport
}

func (m *recordingMetrics) DriftDetected(d Drift) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.drifts = append(m.drifts, d)
}

func (m *recordingMetrics) AuditDone(r AuditReport) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.audits = append(m.audits, r)
}

// lastAudit returns the report of the last audit.
func (m *recordingMetrics) lastAudit() AuditReport {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.audits) == 0 {
		return AuditReport{}
	}
	return m.audits[len(m.audits)-1]
}

func (m *recordingMetrics) OpDone(k plan.Kind, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	name := k.String()
	if err != nil {
		name += "/error"
	}
	m.ops[name]++
}

func (m *recordingMetrics) SetVirtualServers(n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.servers = n
}

func (m *recordingMetrics) SetRealServers(active, draining int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.active, m.draining = active, draining
}

func (m *recordingMetrics) gauges() [3]int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return [3]int{m.servers, m.active, m.draining}
}

// failingIPVS fails every change to virtual servers on one VIP, as a kernel refusing one Service would.
type failingIPVS struct {
	ipvs.Interface
	vip netip.Addr
	err error
}

func (f *failingIPVS) fails(k ipvs.ServiceKey) bool { return f.err != nil && k.Address == f.vip }

func (f *failingIPVS) AddService(s ipvs.Service) error {
	if f.fails(s.ServiceKey) {
		return f.err
	}
	return f.Interface.AddService(s)
}

func (f *failingIPVS) AddDestination(k ipvs.ServiceKey, d ipvs.Destination) error {
	if f.fails(k) {
		return f.err
	}
	return f.Interface.AddDestination(k, d)
}
