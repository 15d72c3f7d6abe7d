package syncer

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
	"github.com/ipvs-operator/ipvs-operator/ipvs/fake"
	"github.com/ipvs-operator/ipvs-operator/ipvs/plan"
)

// portWatch checks, at every kernel call, the two promises that keep a ClusterIP from passing new
// connections to the local stack: a port element exists only while its virtual server does (added after
// AddService, removed before DeleteService), and a VIP is bound only once one of its virtual servers exists;
// and the promise that keeps its first clients from being refused: a VIP is bound only once the ports of its
// virtual servers are open.
type portWatch struct {
	t *testing.T
	*fake.IPVS
	rules *fake.Rules
	vips  *fake.VIPs
}

func (w *portWatch) servers() map[ipvs.ServiceKey]bool {
	vs, err := ipvs.Snapshot(w.IPVS)
	if err != nil {
		w.t.Fatal(err)
	}
	out := map[ipvs.ServiceKey]bool{}
	for _, v := range vs {
		out[v.ServiceKey] = true
	}
	return out
}

func (w *portWatch) checkPorts(when string) {
	w.t.Helper()
	els, err := w.rules.Elements()
	if err != nil {
		return
	}
	have := w.servers()
	for _, k := range els.Ports {
		if !have[k] {
			w.t.Errorf("%s: port element %s has no virtual server: the ClusterIP passes it to the local stack", when, k)
		}
	}
}

func (w *portWatch) DeleteService(k ipvs.ServiceKey) error {
	if els, err := w.rules.Elements(); err == nil && slices.Contains(els.Ports, k) {
		w.t.Errorf("DeleteService(%s) while its port element is still in the set", k)
	}
	return w.IPVS.DeleteService(k)
}

func (w *portWatch) Update(add, remove ipvs.RuleElements) error {
	err := w.rules.Update(add, remove)
	w.checkPorts(fmt.Sprintf("after Update(+%v, -%v)", add.Ports, remove.Ports))
	return err
}

func (w *portWatch) Bind(a netip.Addr) error {
	found := false
	var open []ipvs.ServiceKey
	if els, err := w.rules.Elements(); err == nil {
		open = els.Ports
	}
	for k := range w.servers() {
		if k.Address != a {
			continue
		}
		found = true
		if !slices.Contains(open, k) {
			// The first client of a new Service would be refused by the port filter (a reset), although
			// the kernel already shows the Service served.
			w.t.Errorf("Bind(%s) before the port of its virtual server %s is open", a, k)
		}
	}
	if !found {
		w.t.Errorf("Bind(%s) before any of its virtual servers exists", a)
	}
	return w.vips.Bind(a)
}

// watchedVIPs and watchedRules route the VIP and nftables calls through the watch.
type watchedVIPs struct {
	*fake.VIPs
	w *portWatch
}

func (v watchedVIPs) Bind(a netip.Addr) error { return v.w.Bind(a) }

type watchedRules struct {
	*fake.Rules
	w *portWatch
}

func (r watchedRules) Update(add, remove ipvs.RuleElements) error { return r.w.Update(add, remove) }

func TestPortElementsFollowVirtualServers(t *testing.T) {
	h := newHarness(t)
	w := &portWatch{t: t, IPVS: h.ipvs, rules: h.rules, vips: h.vips}
	h.s = New(w, watchedVIPs{h.vips, w}, watchedRules{h.rules, w}, h.clock, Options{})
	if err := h.s.Adopt(h.ctx); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name  string
		want  plan.Desired
		ports string
	}{
		{"created, dual-stack", service(drain, tcp("10.96.0.10:80", "10.244.1.5:8080"), udp("10.96.0.10:53", "10.244.1.5:5353"),
			tcp("[fd00::10]:80", "[fd00:244::5]:8080")), "-u 10.96.0.10:53, -t 10.96.0.10:80, -t [fd00::10]:80"},
		{"port added", service(drain, tcp("10.96.0.10:80", "10.244.1.5:8080"), udp("10.96.0.10:53", "10.244.1.5:5353"),
			tcp("10.96.0.10:443", "10.244.1.5:8443"), tcp("[fd00::10]:80", "[fd00:244::5]:8080")),
			"-u 10.96.0.10:53, -t 10.96.0.10:80, -t 10.96.0.10:443, -t [fd00::10]:80"},
		{"port and IPv6 removed", service(drain, tcp("10.96.0.10:80", "10.244.1.5:8080"), tcp("10.96.0.10:443", "10.244.1.5:8443")),
			"-t 10.96.0.10:80, -t 10.96.0.10:443"},
		{"ClusterIP changed", service(drain, tcp("10.96.0.11:80", "10.244.1.5:8080")), "-t 10.96.0.11:80"},
		{"deleted", plan.Desired{}, ""},
	}
	for _, st := range steps {
		h.sync("ns/web", st.want)
		els, err := h.rules.Elements()
		if err != nil {
			t.Fatal(err)
		}
		if got := joinKeys(els.Ports); got != st.ports {
			t.Errorf("%s: ports %q, want %q", st.name, got, st.ports)
		}
		vips, _ := h.vips.List()
		bindable := plan.BindableVIPs(st.want).UnsortedList()
		slices.SortFunc(bindable, netip.Addr.Compare)
		if got, want := joinAddrs(vips), joinAddrs(bindable); got != want {
			t.Errorf("%s: VIPs %q, want %q", st.name, got, want)
		}
	}
}

// A failed AddService never leaves an open VIP: the VIP stays unbound (in the ClusterIP set, so the guard
// covers it) until one of its virtual servers exists; the other VIP of the Service is served meanwhile.
func TestFailedAddServiceLeavesNoVIPBound(t *testing.T) {
	h := newHarness(t)
	broken := &failingIPVS{Interface: h.ipvs, vip: addr("10.96.0.10"), err: unix.ENOMEM}
	h.s = New(broken, h.vips, h.rules, h.clock, Options{})
	if err := h.s.Adopt(h.ctx); err != nil {
		t.Fatal(err)
	}
	want := service(drain, tcp("10.96.0.10:80", "10.244.1.5:8080"), tcp("[fd00::10]:80", "[fd00:244::5]:8080"))
	if _, err := h.s.SyncService(h.ctx, "ns/web", want); !errors.Is(err, unix.ENOMEM) {
		t.Fatalf("err = %v, want ENOMEM", err)
	}
	state := func() (vips, clusterIPs, ports string) {
		v, _ := h.vips.List()
		els, _ := h.rules.Elements()
		return joinAddrs(v), joinAddrs(els.ClusterIPs), joinKeys(els.Ports)
	}
	vips, cips, ports := state()
	if vips != "fd00::10" || cips != "10.96.0.10 fd00::10" || ports != "-t [fd00::10]:80" {
		t.Errorf("after the failed AddService: VIPs %q, ClusterIPs %q, ports %q; want fd00::10 bound alone, both "+
			"ClusterIPs guarded, the IPv6 port open", vips, cips, ports)
	}
	broken.err = nil
	h.sync("ns/web", want)
	vips, _, ports = state()
	if vips != "10.96.0.10 fd00::10" || ports != "-t 10.96.0.10:80, -t [fd00::10]:80" {
		t.Errorf("after the retry: VIPs %q, ports %q; want both bound and open", vips, ports)
	}
}

// The audit puts back a port element someone deleted (`nft delete element`, a flushed set) and removes one
// that no virtual server backs (left by a previous agent).
func TestAuditRepairsPortElements(t *testing.T) {
	h := newHarness(t)
	h.sync("ns/web", service(drain, tcp("10.96.0.10:80", "10.244.1.5:8080"), udp("10.96.0.10:53", "10.244.1.5:5353")))
	lost, stray := skey(ipvs.UDP, "10.96.0.10:53"), skey(ipvs.TCP, "10.96.0.10:22")
	if err := h.rules.Update(ipvs.RuleElements{Ports: []ipvs.ServiceKey{stray}}, ipvs.RuleElements{Ports: []ipvs.ServiceKey{lost}}); err != nil {
		t.Fatal(err)
	}
	if err := h.s.Audit(h.ctx); err != nil {
		t.Fatal(err)
	}
	els, _ := h.rules.Elements()
	if got, want := joinKeys(els.Ports), "-u 10.96.0.10:53, -t 10.96.0.10:80"; got != want {
		t.Errorf("after the audit: ports %q, want %q", got, want)
	}
	if n := h.metrics.lastAudit().Elements; n != 2 {
		t.Errorf("audit reported %d elements repaired, want 2", n)
	}
}

// An agent taking over a table that has ClusterIPs but no port elements (made by a version without the port
// filter) opens the ports of the virtual servers it finds, at once, rather than refuse every connection to
// those ClusterIPs until each Service is synced again.
func TestAdoptOpensPortsOfATableWithoutThem(t *testing.T) {
	h := newHarness(t)
	h.sync("ns/web", service(drain, tcp("10.96.0.10:80", "10.244.1.5:8080"), udp("10.96.0.10:53", "10.244.1.5:5353")))
	els, _ := h.rules.Elements()
	if err := h.rules.Update(ipvs.RuleElements{}, ipvs.RuleElements{Ports: els.Ports}); err != nil {
		t.Fatal(err)
	}
	h.restart()
	els, _ = h.rules.Elements()
	if got, want := joinKeys(els.Ports), "-u 10.96.0.10:53, -t 10.96.0.10:80"; got != want {
		t.Errorf("after Adopt: ports %q, want %q", got, want)
	}
	// A restart over a complete table changes nothing in the sets.
	h.rules.ResetOps()
	h.restart()
	if n := h.rules.Ops()[fake.Update]; n != 0 {
		t.Errorf("a plain restart made %d set updates, want 0", n)
	}
}

// The audit's sweep closes an orphan's ports before it deletes the orphan (the watch checks the order).
func TestSweepClosesPortsBeforeDeleting(t *testing.T) {
	h := newHarness(t)
	h.sync("ns/web", service(drain, tcp("10.96.0.10:80", "10.244.1.5:8080")))
	h.sync("ns/gone", service(drain, tcp("10.96.0.99:80", "10.244.9.9:8080"), udp("10.96.0.99:53", "10.244.9.9:5353")))
	// The agent restarts; ns/gone was deleted meanwhile.
	w := &portWatch{t: t, IPVS: h.ipvs, rules: h.rules, vips: h.vips}
	h.s = New(w, watchedVIPs{h.vips, w}, watchedRules{h.rules, w}, h.clock, Options{Metrics: h.metrics})
	if err := h.s.Adopt(h.ctx); err != nil {
		t.Fatal(err)
	}
	h.sync("ns/web", service(drain, tcp("10.96.0.10:80", "10.244.1.5:8080")))
	if err := h.s.Audit(h.ctx); err != nil {
		t.Fatal(err)
	}
	els, _ := h.rules.Elements()
	if got, want := joinKeys(els.Ports), "-t 10.96.0.10:80"; got != want {
		t.Errorf("after the sweep: ports %q, want %q", got, want)
	}
	if r := h.metrics.lastAudit(); r.Orphans != 2 {
		t.Errorf("audit swept %d orphans, want 2", r.Orphans)
	}
}
