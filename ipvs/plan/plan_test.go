package plan

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
)

var (
	t0      = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	vip4    = netip.MustParseAddr("10.96.0.10")
	vip6    = netip.MustParseAddr("fd00::10")
	http    = ipvs.ServiceKey{Address: vip4, Port: 80, Protocol: ipvs.TCP}
	https   = ipvs.ServiceKey{Address: vip4, Port: 443, Protocol: ipvs.TCP}
	dns     = ipvs.ServiceKey{Address: vip4, Port: 53, Protocol: ipvs.UDP}
	sctp    = ipvs.ServiceKey{Address: vip4, Port: 9, Protocol: ipvs.SCTP}
	http6   = ipvs.ServiceKey{Address: vip6, Port: 80, Protocol: ipvs.TCP}
	timeout = 30 * time.Second
)

func rr(k ipvs.ServiceKey) ipvs.Service { return ipvs.Service{ServiceKey: k, Scheduler: "rr"} }

func dest(addr string, port uint16, weight int) ipvs.Destination {
	return ipvs.Destination{DestinationKey: ipvs.DestinationKey{Address: netip.MustParseAddr(addr), Port: port}, Weight: weight}
}

func vs(s ipvs.Service, dests ...ipvs.Destination) ipvs.VirtualServer {
	return ipvs.VirtualServer{Service: s, Destinations: dests}
}

// seen is a real server as observed: weight, active+inactive connections, drain start.
func seen(addr string, port uint16, weight, conns int, since time.Time) ObservedDestination {
	return ObservedDestination{
		ObservedDestination: ipvs.ObservedDestination{
			Destination:      dest(addr, port, weight),
			DestinationStats: ipvs.DestinationStats{ActiveConnections: conns},
		},
		DrainingSince: since,
	}
}

func osrv(s ipvs.Service, dests ...ObservedDestination) ObservedServer {
	return ObservedServer{Service: s, Destinations: dests}
}

// computeCases are TestCompute's table; FuzzCompute starts from them too.
var computeCases = []struct {
	name    string
	want    Desired
	have    Observed
	now     time.Time
	ops     []string
	recheck time.Time
}{{
	name: "nothing desired, nothing there",
}, {
	// The VIP is bound last: until then the node does not accept packets for it, so no packet meets a
	// ClusterIP without its virtual servers.
	name: "new Service: add virtual servers, then their real servers, then bind",
	want: Desired{VIPs: []netip.Addr{vip4}, Servers: []ipvs.VirtualServer{
		vs(rr(http), dest("10.244.1.5", 8080, 1), dest("10.244.2.5", 8080, 1)),
		vs(rr(https), dest("10.244.1.5", 8443, 1)),
	}},
	ops: []string{
		"ipvsadm -A -t 10.96.0.10:80 -s rr",
		"ipvsadm -A -t 10.96.0.10:443 -s rr",
		"ipvsadm -a -t 10.96.0.10:80 -r 10.244.1.5:8080 -m -w 1",
		"ipvsadm -a -t 10.96.0.10:80 -r 10.244.2.5:8080 -m -w 1",
		"ipvsadm -a -t 10.96.0.10:443 -r 10.244.1.5:8443 -m -w 1",
		"ip addr add 10.96.0.10/32",
	},
}, {
	name: "a VIP with no virtual server is not bound",
	want: Desired{VIPs: []netip.Addr{vip4, vip6}, Servers: []ipvs.VirtualServer{vs(rr(http6))}},
	ops: []string{
		"ipvsadm -A -t [fd00::10]:80 -s rr",
		"ip addr add fd00::10/128",
	},
}, {
	name: "a bound VIP whose last virtual server goes is unbound, though still desired",
	want: Desired{VIPs: []netip.Addr{vip4}},
	have: Observed{VIPs: []netip.Addr{vip4}, Servers: []ObservedServer{osrv(rr(http))}},
	ops: []string{
		"ipvsadm -D -t 10.96.0.10:80",
		"ip addr del 10.96.0.10/32",
	},
}, {
	name: "dual-stack Service binds both families",
	want: Desired{VIPs: []netip.Addr{vip4, vip6}, Servers: []ipvs.VirtualServer{
		vs(rr(http), dest("10.244.1.5", 8080, 1)),
		vs(rr(http6), dest("fd00:244::5", 8080, 1)),
	}},
	ops: []string{
		"ipvsadm -A -t 10.96.0.10:80 -s rr",
		"ipvsadm -A -t [fd00::10]:80 -s rr",
		"ipvsadm -a -t 10.96.0.10:80 -r 10.244.1.5:8080 -m -w 1",
		"ipvsadm -a -t [fd00::10]:80 -r [fd00:244::5]:8080 -m -w 1",
		"ip addr add 10.96.0.10/32",
		"ip addr add fd00::10/128",
	},
}, {
	name: "unchanged: no ops",
	want: Desired{VIPs: []netip.Addr{vip4}, Servers: []ipvs.VirtualServer{vs(rr(http), dest("10.244.1.5", 8080, 1))}},
	have: Observed{VIPs: []netip.Addr{vip4}, Servers: []ObservedServer{osrv(rr(http), seen("10.244.1.5", 8080, 1, 7, time.Time{}))}},
}, {
	name: "scheduler and persistence change in place",
	want: Desired{VIPs: []netip.Addr{vip4}, Servers: []ipvs.VirtualServer{
		vs(ipvs.Service{ServiceKey: http, Scheduler: "lc", Persistence: 3 * time.Hour}, dest("10.244.1.5", 8080, 1)),
	}},
	have: Observed{VIPs: []netip.Addr{vip4}, Servers: []ObservedServer{osrv(rr(http), seen("10.244.1.5", 8080, 1, 0, time.Time{}))}},
	ops:  []string{"ipvsadm -E -t 10.96.0.10:80 -s lc -p 10800"},
}, {
	name: "TCP endpoint replaced: new one added before the old one is quiesced",
	want: Desired{VIPs: []netip.Addr{vip4}, DrainTimeout: timeout, Servers: []ipvs.VirtualServer{
		vs(rr(http), dest("10.244.3.5", 8080, 1)),
	}},
	have: Observed{VIPs: []netip.Addr{vip4}, Servers: []ObservedServer{osrv(rr(http), seen("10.244.1.5", 8080, 1, 2, time.Time{}))}},
	now:  t0,
	ops: []string{
		"ipvsadm -a -t 10.96.0.10:80 -r 10.244.3.5:8080 -m -w 1",
		"ipvsadm -e -t 10.96.0.10:80 -r 10.244.1.5:8080 -m -w 0",
	},
	recheck: t0.Add(timeout),
}, {
	name: "TCP endpoint gone without connections: deleted at once",
	want: Desired{VIPs: []netip.Addr{vip4}, DrainTimeout: timeout, Servers: []ipvs.VirtualServer{vs(rr(http))}},
	have: Observed{VIPs: []netip.Addr{vip4}, Servers: []ObservedServer{osrv(rr(http), seen("10.244.1.5", 8080, 1, 0, time.Time{}))}},
	now:  t0,
	ops:  []string{"ipvsadm -d -t 10.96.0.10:80 -r 10.244.1.5:8080"},
}, {
	name: "TCP drain timeout 0: deleted at once despite connections",
	want: Desired{VIPs: []netip.Addr{vip4}, Servers: []ipvs.VirtualServer{vs(rr(http))}},
	have: Observed{VIPs: []netip.Addr{vip4}, Servers: []ObservedServer{osrv(rr(http), seen("10.244.1.5", 8080, 1, 5, time.Time{}))}},
	now:  t0,
	ops:  []string{"ipvsadm -d -t 10.96.0.10:80 -r 10.244.1.5:8080"},
}, {
	name: "UDP and SCTP endpoints gone: deleted at once despite connections",
	want: Desired{VIPs: []netip.Addr{vip4}, DrainTimeout: timeout, Servers: []ipvs.VirtualServer{vs(rr(sctp)), vs(rr(dns))}},
	have: Observed{VIPs: []netip.Addr{vip4}, Servers: []ObservedServer{
		osrv(rr(dns), seen("10.244.1.5", 53, 1, 9, time.Time{})),
		osrv(rr(sctp), seen("10.244.1.5", 9, 1, 9, time.Time{})),
	}},
	now: t0,
	ops: []string{
		"ipvsadm -d --sctp-service 10.96.0.10:9 -r 10.244.1.5:9",
		"ipvsadm -d -u 10.96.0.10:53 -r 10.244.1.5:53",
	},
}, {
	name:    "draining TCP real server before its deadline: left alone, recheck at the deadline",
	want:    Desired{VIPs: []netip.Addr{vip4}, DrainTimeout: timeout, Servers: []ipvs.VirtualServer{vs(rr(http))}},
	have:    Observed{VIPs: []netip.Addr{vip4}, Servers: []ObservedServer{osrv(rr(http), seen("10.244.1.5", 8080, 0, 3, t0))}},
	now:     t0.Add(10 * time.Second),
	recheck: t0.Add(timeout),
}, {
	name: "draining TCP real server past its deadline: deleted",
	want: Desired{VIPs: []netip.Addr{vip4}, DrainTimeout: timeout, Servers: []ipvs.VirtualServer{vs(rr(http))}},
	have: Observed{VIPs: []netip.Addr{vip4}, Servers: []ObservedServer{osrv(rr(http), seen("10.244.1.5", 8080, 0, 3, t0))}},
	now:  t0.Add(timeout),
	ops:  []string{"ipvsadm -d -t 10.96.0.10:80 -r 10.244.1.5:8080"},
}, {
	name: "draining TCP real server whose connections ended: deleted before the deadline",
	want: Desired{VIPs: []netip.Addr{vip4}, DrainTimeout: timeout, Servers: []ipvs.VirtualServer{vs(rr(http))}},
	have: Observed{VIPs: []netip.Addr{vip4}, Servers: []ObservedServer{osrv(rr(http), seen("10.244.1.5", 8080, 0, 0, t0))}},
	now:  t0.Add(time.Second),
	ops:  []string{"ipvsadm -d -t 10.96.0.10:80 -r 10.244.1.5:8080"},
}, {
	name:    "weight-0 real server of unknown drain start (adopted): drain counted from now",
	want:    Desired{VIPs: []netip.Addr{vip4}, DrainTimeout: timeout, Servers: []ipvs.VirtualServer{vs(rr(http))}},
	have:    Observed{VIPs: []netip.Addr{vip4}, Servers: []ObservedServer{osrv(rr(http), seen("10.244.1.5", 8080, 0, 3, time.Time{}))}},
	now:     t0,
	recheck: t0.Add(timeout),
}, {
	name: "earliest deadline of several drains",
	want: Desired{VIPs: []netip.Addr{vip4}, DrainTimeout: timeout, Servers: []ipvs.VirtualServer{vs(rr(http))}},
	have: Observed{VIPs: []netip.Addr{vip4}, Servers: []ObservedServer{osrv(rr(http),
		seen("10.244.1.5", 8080, 0, 3, t0.Add(5*time.Second)),
		seen("10.244.1.6", 8080, 0, 3, t0),
		seen("10.244.1.7", 8080, 1, 3, time.Time{}),
	)}},
	now:     t0.Add(10 * time.Second),
	ops:     []string{"ipvsadm -e -t 10.96.0.10:80 -r 10.244.1.7:8080 -m -w 0"},
	recheck: t0.Add(timeout),
}, {
	name: "endpoint back while draining: weight restored",
	want: Desired{VIPs: []netip.Addr{vip4}, DrainTimeout: timeout, Servers: []ipvs.VirtualServer{vs(rr(http), dest("10.244.1.5", 8080, 1))}},
	have: Observed{VIPs: []netip.Addr{vip4}, Servers: []ObservedServer{osrv(rr(http), seen("10.244.1.5", 8080, 0, 3, t0))}},
	now:  t0.Add(time.Second),
	ops:  []string{"ipvsadm -e -t 10.96.0.10:80 -r 10.244.1.5:8080 -m -w 1"},
}, {
	name: "desired endpoint found at weight 0 after a restart: weight restored",
	want: Desired{VIPs: []netip.Addr{vip4}, Servers: []ipvs.VirtualServer{vs(rr(http), dest("10.244.1.5", 8080, 1))}},
	have: Observed{VIPs: []netip.Addr{vip4}, Servers: []ObservedServer{osrv(rr(http), seen("10.244.1.5", 8080, 0, 0, time.Time{}))}},
	ops:  []string{"ipvsadm -e -t 10.96.0.10:80 -r 10.244.1.5:8080 -m -w 1"},
}, {
	name: "port removed: its virtual server deleted after the other port's changes, without per-destination ops",
	want: Desired{VIPs: []netip.Addr{vip4}, DrainTimeout: timeout, Servers: []ipvs.VirtualServer{
		vs(rr(http), dest("10.244.1.5", 8080, 1), dest("10.244.1.6", 8080, 1)),
	}},
	have: Observed{VIPs: []netip.Addr{vip4}, Servers: []ObservedServer{
		osrv(rr(https), seen("10.244.1.5", 8443, 1, 4, time.Time{})),
		osrv(rr(http), seen("10.244.1.5", 8080, 1, 0, time.Time{})),
	}},
	ops: []string{
		"ipvsadm -a -t 10.96.0.10:80 -r 10.244.1.6:8080 -m -w 1",
		"ipvsadm -D -t 10.96.0.10:443",
	},
}, {
	name: "Service deleted: virtual servers deleted, VIPs unbound last",
	have: Observed{VIPs: []netip.Addr{vip6, vip4}, Servers: []ObservedServer{
		osrv(rr(http6), seen("fd00:244::5", 8080, 1, 4, time.Time{})),
		osrv(rr(http), seen("10.244.1.5", 8080, 1, 4, time.Time{})),
	}},
	ops: []string{
		"ipvsadm -D -t 10.96.0.10:80",
		"ipvsadm -D -t [fd00::10]:80",
		"ip addr del 10.96.0.10/32",
		"ip addr del fd00::10/128",
	},
}, {
	name: "every phase at once, in order",
	want: Desired{VIPs: []netip.Addr{vip4}, DrainTimeout: timeout, Servers: []ipvs.VirtualServer{
		vs(ipvs.Service{ServiceKey: http, Scheduler: "lc"}, dest("10.244.3.5", 8080, 1)),
		vs(rr(https), dest("10.244.3.5", 8443, 1)),
	}},
	have: Observed{VIPs: []netip.Addr{vip6}, Servers: []ObservedServer{
		osrv(rr(http6), seen("fd00:244::5", 8080, 1, 4, time.Time{})),
		osrv(rr(http), seen("10.244.1.5", 8080, 1, 4, time.Time{})),
	}},
	now: t0,
	ops: []string{
		"ipvsadm -E -t 10.96.0.10:80 -s lc",
		"ipvsadm -A -t 10.96.0.10:443 -s rr",
		"ipvsadm -a -t 10.96.0.10:80 -r 10.244.3.5:8080 -m -w 1",
		"ipvsadm -a -t 10.96.0.10:443 -r 10.244.3.5:8443 -m -w 1",
		"ip addr add 10.96.0.10/32",
		"ipvsadm -e -t 10.96.0.10:80 -r 10.244.1.5:8080 -m -w 0",
		"ipvsadm -D -t [fd00::10]:80",
		"ip addr del fd00::10/128",
	},
	recheck: t0.Add(timeout),
}}

func TestCompute(t *testing.T) {
	for _, tt := range computeCases {
		t.Run(tt.name, func(t *testing.T) {
			p := Compute(tt.want, tt.have, tt.now)
			got := make([]string, 0, len(p.Ops))
			for _, op := range p.Ops {
				got = append(got, op.String())
			}
			if diff := cmp.Diff(tt.ops, got, cmpEmptyIsNil); diff != "" {
				t.Errorf("ops (-want +got):\n%s", diff)
			}
			if !p.RecheckAt.Equal(tt.recheck) {
				t.Errorf("RecheckAt = %v, want %v", p.RecheckAt, tt.recheck)
			}
		})
	}
}

var cmpEmptyIsNil = cmp.FilterValues(func(a, b []string) bool { return len(a) == 0 && len(b) == 0 }, cmp.Ignore())

// TestComputeOpsCarryWhatTheKernelNeeds checks the typed fields, not just the rendering.
func TestComputeOpsCarryWhatTheKernelNeeds(t *testing.T) {
	svc := ipvs.Service{ServiceKey: http, Scheduler: "sh", Persistence: time.Minute}
	p := Compute(Desired{VIPs: []netip.Addr{vip4}, Servers: []ipvs.VirtualServer{vs(svc, dest("10.244.1.5", 8080, 1))}}, Observed{}, t0)
	want := []Op{
		{Kind: AddService, Service: svc},
		{Kind: AddDestination, Service: svc, Destination: dest("10.244.1.5", 8080, 1)},
		{Kind: BindVIP, VIP: vip4},
	}
	if diff := cmp.Diff(want, p.Ops, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("ops (-want +got):\n%s", diff)
	}
}

func TestComputeIsDeterministic(t *testing.T) {
	have := Observed{VIPs: []netip.Addr{vip6, vip4}, Servers: []ObservedServer{
		osrv(rr(http6), seen("fd00:244::5", 8080, 1, 0, time.Time{})),
		osrv(rr(https)),
		osrv(rr(http), seen("10.244.1.9", 8080, 1, 0, time.Time{}), seen("10.244.1.5", 8080, 1, 0, time.Time{}), seen("10.244.1.7", 8080, 1, 0, time.Time{})),
		osrv(rr(dns)),
	}}
	want := Desired{VIPs: []netip.Addr{vip4}, Servers: []ipvs.VirtualServer{vs(rr(http))}}
	first := render(Compute(want, have, t0).Ops)
	for range 20 {
		if got := render(Compute(want, have, t0).Ops); got != first {
			t.Fatalf("plan changed between runs:\n%s\nvs\n%s", first, got)
		}
	}
}

func render(ops []Op) string {
	var b strings.Builder
	for _, op := range ops {
		b.WriteString(op.String())
		b.WriteByte('\n')
	}
	return b.String()
}

func TestOpString(t *testing.T) {
	for op, want := range map[Op]string{
		{Kind: DeleteService, Service: rr(sctp)}:                                           "ipvsadm -D --sctp-service 10.96.0.10:9",
		{Kind: AddService, Service: ipvs.Service{ServiceKey: dns, Scheduler: "mh"}}:        "ipvsadm -A -u 10.96.0.10:53 -s mh",
		{Kind: DeleteDestination, Service: rr(http6), Destination: dest("fd00::5", 80, 1)}: "ipvsadm -d -t [fd00::10]:80 -r [fd00::5]:80",
		{Kind: UnbindVIP, VIP: vip6}:                                                       "ip addr del fd00::10/128",
		{Kind: 99}:                                                                         "kind(99)",
	} {
		if got := op.String(); got != want {
			t.Errorf("%#v.String() = %q, want %q", op, got, want)
		}
	}
}

func TestDrainTimeoutFor(t *testing.T) {
	d := Desired{DrainTimeout: timeout}
	for p, want := range map[ipvs.Protocol]time.Duration{ipvs.TCP: timeout, ipvs.UDP: 0, ipvs.SCTP: 0} {
		if got := d.DrainTimeoutFor(p); got != want {
			t.Errorf("DrainTimeoutFor(%v) = %v, want %v", p, got, want)
		}
	}
}
