package fake_test

import (
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
	"github.com/ipvs-operator/ipvs-operator/ipvs/fake"
)

var (
	vip  = ipvs.ServiceKey{Address: netip.MustParseAddr("10.96.0.10"), Port: 80, Protocol: ipvs.TCP}
	vip6 = ipvs.ServiceKey{Address: netip.MustParseAddr("fd00::10"), Port: 80, Protocol: ipvs.TCP}
	ep1  = ipvs.DestinationKey{Address: netip.MustParseAddr("10.244.1.2"), Port: 8080}
	ep2  = ipvs.DestinationKey{Address: netip.MustParseAddr("10.244.2.3"), Port: 8080}
)

// TestErrors checks that every refusal carries both the sentinel and the kernel's errno, as the netlink
// implementation's do.
func TestErrors(t *testing.T) {
	tests := []struct {
		name     string
		setup    func(f *fake.IPVS)
		call     func(f *fake.IPVS) error
		sentinel error // nil: matches neither ErrExists nor ErrNotFound
		errno    unix.Errno
	}{
		{
			name:     "duplicate service",
			setup:    func(f *fake.IPVS) { mustAdd(t, f) },
			call:     func(f *fake.IPVS) error { return f.AddService(ipvs.Service{ServiceKey: vip, Scheduler: "rr"}) },
			sentinel: ipvs.ErrExists, errno: unix.EEXIST,
		},
		{
			name:  "unknown scheduler is not ErrNotFound",
			call:  func(f *fake.IPVS) error { return f.AddService(ipvs.Service{ServiceKey: vip, Scheduler: "nope"}) },
			errno: unix.ENOENT,
		},
		{
			name:     "update missing service",
			call:     func(f *fake.IPVS) error { return f.UpdateService(ipvs.Service{ServiceKey: vip, Scheduler: "rr"}) },
			sentinel: ipvs.ErrNotFound, errno: unix.ESRCH,
		},
		{
			name:     "delete missing service",
			call:     func(f *fake.IPVS) error { return f.DeleteService(vip) },
			sentinel: ipvs.ErrNotFound, errno: unix.ESRCH,
		},
		{
			name: "destinations of missing service",
			call: func(f *fake.IPVS) error {
				_, err := f.Destinations(vip)
				return err
			},
			sentinel: ipvs.ErrNotFound, errno: unix.ESRCH,
		},
		{
			name: "add destination to missing service",
			call: func(f *fake.IPVS) error {
				return f.AddDestination(vip, ipvs.Destination{DestinationKey: ep1, Weight: 1})
			},
			sentinel: ipvs.ErrNotFound, errno: unix.ESRCH,
		},
		{
			name: "duplicate destination",
			setup: func(f *fake.IPVS) {
				mustAdd(t, f)
				if err := f.AddDestination(vip, ipvs.Destination{DestinationKey: ep1, Weight: 1}); err != nil {
					t.Fatal(err)
				}
			},
			call: func(f *fake.IPVS) error {
				return f.AddDestination(vip, ipvs.Destination{DestinationKey: ep1, Weight: 2})
			},
			sentinel: ipvs.ErrExists, errno: unix.EEXIST,
		},
		{
			name:     "update missing destination",
			setup:    func(f *fake.IPVS) { mustAdd(t, f) },
			call:     func(f *fake.IPVS) error { return f.UpdateDestination(vip, ipvs.Destination{DestinationKey: ep1}) },
			sentinel: ipvs.ErrNotFound, errno: unix.ENOENT,
		},
		{
			name:     "delete missing destination",
			setup:    func(f *fake.IPVS) { mustAdd(t, f) },
			call:     func(f *fake.IPVS) error { return f.DeleteDestination(vip, ep1) },
			sentinel: ipvs.ErrNotFound, errno: unix.ENOENT,
		},
		{
			name:  "negative weight",
			setup: func(f *fake.IPVS) { mustAdd(t, f) },
			call: func(f *fake.IPVS) error {
				return f.AddDestination(vip, ipvs.Destination{DestinationKey: ep1, Weight: -1})
			},
			errno: unix.ERANGE,
		},
		{
			name: "IPv4 real server in IPv6 virtual server",
			setup: func(f *fake.IPVS) {
				if err := f.AddService(ipvs.Service{ServiceKey: vip6, Scheduler: "rr"}); err != nil {
					t.Fatal(err)
				}
			},
			call:  func(f *fake.IPVS) error { return f.AddDestination(vip6, ipvs.Destination{DestinationKey: ep1}) },
			errno: unix.EINVAL,
		},
		{
			name:  "invalid address",
			call:  func(f *fake.IPVS) error { return f.AddService(ipvs.Service{Scheduler: "rr"}) },
			errno: unix.EINVAL,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := fake.New()
			if tt.setup != nil {
				tt.setup(f)
			}
			err := tt.call(f)
			if !errors.Is(err, tt.errno) {
				t.Fatalf("err = %v, want errno %v", err, tt.errno)
			}
			for _, s := range []error{ipvs.ErrExists, ipvs.ErrNotFound} {
				if got, want := errors.Is(err, s), errors.Is(s, tt.sentinel); got != want {
					t.Errorf("errors.Is(%v, %v) = %v, want %v", err, s, got, want)
				}
			}
			var ie *ipvs.Error
			if !errors.As(err, &ie) {
				t.Errorf("err %v is not an *ipvs.Error", err)
			}
		})
	}
}

func TestLifecycle(t *testing.T) {
	f := fake.New()
	svc := ipvs.Service{ServiceKey: vip, Scheduler: "rr", Persistence: 1500 * time.Millisecond}
	if err := f.AddService(svc); err != nil {
		t.Fatal(err)
	}
	for _, d := range []ipvs.Destination{{DestinationKey: ep2, Weight: 1}, {DestinationKey: ep1, Weight: 1}} {
		if err := f.AddDestination(vip, d); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.SetConnections(vip, ep1, 3, 4); err != nil {
		t.Fatal(err)
	}
	if err := f.UpdateDestination(vip, ipvs.Destination{DestinationKey: ep1, Weight: 0}); err != nil {
		t.Fatal(err)
	}
	svcs, err := f.Services()
	if err != nil {
		t.Fatal(err)
	}
	if len(svcs) != 1 || svcs[0].Persistence != 2*time.Second {
		t.Errorf("Services() = %+v, want one with persistence rounded up to 2s like the kernel", svcs)
	}
	dsts, err := f.Destinations(vip)
	if err != nil {
		t.Fatal(err)
	}
	want := []ipvs.ObservedDestination{
		{Destination: ipvs.Destination{DestinationKey: ep1, Weight: 0}, DestinationStats: ipvs.DestinationStats{ActiveConnections: 3, InactiveConnections: 4}},
		{Destination: ipvs.Destination{DestinationKey: ep2, Weight: 1}},
	}
	if len(dsts) != len(want) || dsts[0] != want[0] || dsts[1] != want[1] {
		t.Errorf("Destinations() = %+v, want %+v (sorted, weight updated, counts kept)", dsts, want)
	}
	if err := f.UpdateService(ipvs.Service{ServiceKey: vip, Scheduler: "lc"}); err != nil {
		t.Fatal(err)
	}
	if dsts, _ := f.Destinations(vip); len(dsts) != 2 {
		t.Errorf("UpdateService dropped real servers: %+v", dsts)
	}
	if err := f.DeleteService(vip); err != nil {
		t.Fatal(err)
	}
	if svcs, _ := f.Services(); len(svcs) != 0 {
		t.Errorf("Services() after delete = %+v", svcs)
	}

	ops := f.Ops()
	wantOps := map[fake.Verb]int{
		fake.AddService: 1, fake.AddDestination: 2, fake.UpdateDestination: 1, fake.Services: 2,
		fake.Destinations: 2, fake.UpdateService: 1, fake.DeleteService: 1,
	}
	for v, n := range wantOps {
		if ops[v] != n {
			t.Errorf("Ops()[%s] = %d, want %d (all: %v)", v, ops[v], n, ops)
		}
	}
	if got := f.TotalOps(); got != 10 {
		t.Errorf("TotalOps() = %d, want 10", got)
	}
	f.ResetOps()
	if got := f.TotalOps(); got != 0 {
		t.Errorf("TotalOps() after reset = %d", got)
	}
}

func TestSetErrorAndSchedulers(t *testing.T) {
	f := fake.New()
	boom := errors.New("boom")
	f.SetError(fake.AddService, boom)
	if err := f.AddService(ipvs.Service{ServiceKey: vip, Scheduler: "rr"}); !errors.Is(err, boom) {
		t.Fatalf("AddService err = %v, want injected", err)
	}
	if n := f.OpCount(fake.AddService); n != 1 {
		t.Errorf("failed call not counted: %d", n)
	}
	f.SetError(fake.AddService, nil)
	f.SetSchedulers("rr")
	if err := f.AddService(ipvs.Service{ServiceKey: vip, Scheduler: "mh"}); !errors.Is(err, unix.ENOENT) {
		t.Errorf("scheduler not in SetSchedulers: err = %v, want ENOENT", err)
	}
	if err := f.AddService(ipvs.Service{ServiceKey: vip, Scheduler: "rr"}); err != nil {
		t.Errorf("after clearing: %v", err)
	}
}

func TestConcurrentUse(t *testing.T) {
	f := fake.New()
	mustAdd(t, f)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := ipvs.Destination{DestinationKey: ipvs.DestinationKey{Address: netip.AddrFrom4([4]byte{10, 244, 0, byte(i)}), Port: 80}}
			for range 50 {
				_ = f.AddDestination(vip, d)
				_, _ = f.Destinations(vip)
				_ = f.DeleteDestination(vip, d.DestinationKey)
			}
		}()
	}
	wg.Wait()
	if got := f.OpCount(fake.AddDestination); got != 400 {
		t.Errorf("AddDestination count = %d, want 400", got)
	}
}

func TestVIPs(t *testing.T) {
	v := fake.NewVIPs()
	a := netip.MustParseAddr("10.96.0.10")
	b := netip.MustParseAddr("fd00::10")
	if err := v.Bind(a); !errors.Is(err, unix.ENODEV) {
		t.Errorf("Bind before EnsureInterface: %v, want ENODEV", err)
	}
	steps := []struct {
		name string
		do   func() error
	}{
		{"ensure", v.EnsureInterface},
		{"ensure again", v.EnsureInterface},
		{"bind v6", func() error { return v.Bind(b) }},
		{"bind v4", func() error { return v.Bind(a) }},
		{"bind twice", func() error { return v.Bind(a) }},
		{"unbind absent", func() error { return v.Unbind(netip.MustParseAddr("10.96.0.99")) }},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
	}
	got, err := v.List()
	if err != nil || len(got) != 2 || got[0] != a || got[1] != b {
		t.Errorf("List() = %v, %v; want [%v %v]", got, err, a, b)
	}
	if err := v.DeleteInterface(); err != nil {
		t.Fatal(err)
	}
	if err := v.Unbind(a); err != nil {
		t.Errorf("Unbind without interface: %v", err)
	}
	if v.Ops()[fake.Bind] != 4 {
		t.Errorf("Bind count = %d, want 4", v.Ops()[fake.Bind])
	}
}

func TestRules(t *testing.T) {
	r := fake.NewRules()
	ip := netip.MustParseAddr("10.96.0.10")
	ep := netip.MustParseAddr("10.244.1.2")
	if err := r.Update(ipvs.RuleElements{ClusterIPs: []netip.Addr{ip}}, ipvs.RuleElements{}); !errors.Is(err, unix.ENOENT) {
		t.Errorf("Update before Ensure: %v, want ENOENT", err)
	}
	if err := r.Ensure([]netip.Prefix{netip.MustParsePrefix("10.244.1.7/16")}); err != nil {
		t.Fatal(err)
	}
	if got := r.PodCIDRs(); len(got) != 1 || got[0] != netip.MustParsePrefix("10.244.0.0/16") {
		t.Errorf("PodCIDRs() = %v, want masked", got)
	}
	if err := r.Update(ipvs.RuleElements{ClusterIPs: []netip.Addr{ip}, Endpoints: []netip.Addr{ep}}, ipvs.RuleElements{ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.0.99")}}); err != nil {
		t.Fatal(err)
	}
	if err := r.Ensure(nil); err != nil { // keeps elements
		t.Fatal(err)
	}
	el, err := r.Elements()
	if err != nil || len(el.ClusterIPs) != 1 || len(el.Endpoints) != 1 {
		t.Errorf("Elements() = %+v, %v", el, err)
	}
	if err := r.Delete(); err != nil {
		t.Fatal(err)
	}
	if err := r.Delete(); err != nil {
		t.Errorf("second Delete: %v", err)
	}
	if _, err := r.Elements(); !errors.Is(err, unix.ENOENT) {
		t.Errorf("Elements after Delete: %v, want ENOENT", err)
	}
}

func mustAdd(t *testing.T, f *fake.IPVS) {
	t.Helper()
	if err := f.AddService(ipvs.Service{ServiceKey: vip, Scheduler: "rr"}); err != nil {
		t.Fatal(err)
	}
}
