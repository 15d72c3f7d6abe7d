package ipvs_test

import (
	"errors"
	"net/netip"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
	"github.com/ipvs-operator/ipvs-operator/ipvs/fake"
	"github.com/ipvs-operator/ipvs-operator/test/golden"
)

func svc(addr string, port uint16, p ipvs.Protocol, sched string, persist time.Duration, dsts ...ipvs.Destination) ipvs.VirtualServer {
	return ipvs.VirtualServer{
		Service:      ipvs.Service{ServiceKey: ipvs.ServiceKey{Address: netip.MustParseAddr(addr), Port: port, Protocol: p}, Scheduler: sched, Persistence: persist},
		Destinations: dsts,
	}
}

func dst(addrPort string, w int) ipvs.Destination {
	ap := netip.MustParseAddrPort(addrPort)
	return ipvs.Destination{DestinationKey: ipvs.DestinationKey{Address: ap.Addr(), Port: ap.Port()}, Weight: w}
}

// goldenCases are shared by the golden test and the round-trip test.
var goldenCases = []struct {
	name string
	vs   []ipvs.VirtualServer
}{
	{name: "empty"},
	{
		name: "mixed",
		vs: []ipvs.VirtualServer{
			svc("fd00::10", 53, ipvs.UDP, "rr", 0, dst("[fd00:10:244::3]:5353", 1), dst("[fd00:10:244::2]:5353", 1)),
			svc("10.96.0.10", 53, ipvs.UDP, "rr", 0, dst("10.244.2.3:53", 1), dst("10.244.1.2:53", 1)),
			svc("10.96.0.10", 53, ipvs.TCP, "rr", 0, dst("10.244.2.3:53", 1), dst("10.244.1.2:53", 1)),
			svc("10.96.0.1", 443, ipvs.TCP, "lc", 10800*time.Second, dst("192.168.10.2:6443", 1)),
			svc("10.96.5.5", 9000, ipvs.SCTP, "wrr", 0, dst("10.244.1.9:9000", 0), dst("10.244.1.9:8999", 3)),
			svc("10.96.0.10", 9153, ipvs.TCP, "mh", 0),
			svc("fd00::1", 443, ipvs.TCP, "sh", 30*time.Second, dst("[fd00:10:244::7]:8443", 2)),
		},
	},
	{
		// libipvs subtracts unsigned address words into a C int: addresses more than 2^31 apart compare
		// backwards, and the three VIPs below form a cycle, so only glibc's merge sort gives ipvsadm's order.
		// (Neither list is in that order already: Render would keep it, see TestRenderKeepsIpvsadmOrder.)
		name: "ipvsadm-order-quirk",
		vs: []ipvs.VirtualServer{
			svc("10.96.0.10", 80, ipvs.TCP, "rr", 0, dst("192.168.0.2:80", 1), dst("10.244.0.2:80", 1), dst("172.16.0.2:80", 1)),
			svc("100.64.0.1", 80, ipvs.TCP, "rr", 0),
			svc("203.0.113.1", 80, ipvs.TCP, "rr", 0),
			svc("192.168.0.1", 80, ipvs.TCP, "rr", 0),
		},
	},
}

func TestRenderGolden(t *testing.T) {
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			golden.Check(t, filepath.Join("testdata", "render-"+tc.name+".golden"), []byte(ipvs.Render(tc.vs)))
		})
	}
}

// TestRenderOrder pins ipvsadm's order independently of the golden files.
func TestRenderOrder(t *testing.T) {
	tests := []struct {
		name string
		vs   []ipvs.VirtualServer
		want []string // the -A lines' addresses, in order
	}{
		{
			name: "numeric within a word, not lexical",
			vs:   []ipvs.VirtualServer{svc("10.96.0.10", 80, ipvs.TCP, "rr", 0), svc("10.96.0.9", 80, ipvs.TCP, "rr", 0)},
			want: []string{"10.96.0.9:80", "10.96.0.10:80"},
		},
		{
			name: "more than 2^31 apart compares backwards",
			vs:   []ipvs.VirtualServer{svc("10.96.0.10", 80, ipvs.TCP, "rr", 0), svc("192.168.0.1", 80, ipvs.TCP, "rr", 0)},
			want: []string{"192.168.0.1:80", "10.96.0.10:80"},
		},
		{
			name: "IPv4 before IPv6, then TCP before UDP before SCTP, then port",
			vs: []ipvs.VirtualServer{
				svc("fd00::1", 80, ipvs.TCP, "rr", 0),
				svc("10.0.0.1", 80, ipvs.SCTP, "rr", 0),
				svc("10.0.0.1", 81, ipvs.UDP, "rr", 0),
				svc("10.0.0.1", 80, ipvs.UDP, "rr", 0),
				svc("10.0.0.2", 80, ipvs.TCP, "rr", 0),
			},
			want: []string{"10.0.0.2:80", "10.0.0.1:80", "10.0.0.1:81", "10.0.0.1:80", "[fd00::1]:80"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, l := range strings.Split(ipvs.Render(tt.vs), "\n") {
				if f := strings.Fields(l); len(f) > 2 && f[0] == "-A" {
					got = append(got, f[2])
				}
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("order = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestRenderDoesNotModifyInput(t *testing.T) {
	vs := []ipvs.VirtualServer{svc("10.96.0.10", 80, ipvs.TCP, "rr", 0, dst("10.244.2.3:80", 1), dst("10.244.1.2:80", 1))}
	ipvs.Render(vs)
	if vs[0].Destinations[0].Address != netip.MustParseAddr("10.244.2.3") {
		t.Error("Render sorted the caller's slice")
	}
}

func TestParseSaveRoundTrip(t *testing.T) {
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			text := ipvs.Render(tc.vs)
			parsed, err := ipvs.ParseSave(text)
			if err != nil {
				t.Fatal(err)
			}
			if again := ipvs.Render(parsed); again != text {
				t.Errorf("Render(ParseSave(x)) != x:\n%s\nvs\n%s", again, text)
			}
		})
	}
}

// ipvsadmOrderedSave is `ipvsadm -Sn` output whose real servers, sorted again by ipvsadm's non-transitive
// comparison, come out in another order (226.0.0.1 first). FuzzParseSave found the like.
const ipvsadmOrderedSave = `-A -t 10.96.0.10:80 -s rr
-a -t 10.96.0.10:80 -r 66.0.0.1:80 -m -w 1
-a -t 10.96.0.10:80 -r 97.0.0.1:80 -m -w 1
-a -t 10.96.0.10:80 -r 141.0.0.1:80 -m -w 1
-a -t 10.96.0.10:80 -r 162.0.0.1:80 -m -w 1
-a -t 10.96.0.10:80 -r 168.0.0.1:80 -m -w 1
-a -t 10.96.0.10:80 -r 221.0.0.1:80 -m -w 1
-a -t 10.96.0.10:80 -r 226.0.0.1:80 -m -w 1
-a -t 10.96.0.10:80 -r 231.0.0.1:80 -m -w 1
-a -t 10.96.0.10:80 -r 10.0.0.1:80 -m -w 1
-a -t 10.96.0.10:80 -r 18.0.0.1:80 -m -w 1
-a -t 10.96.0.10:80 -r 86.0.0.1:80 -m -w 1
-a -t 10.96.0.10:80 -r 182.0.0.1:80 -m -w 1
`

// TestRenderKeepsIpvsadmOrder: what ipvsadm printed (ParseSave of it, or Snapshot, which sorts the kernel's
// order the same way) renders unchanged, although sorting it again would reorder it.
func TestRenderKeepsIpvsadmOrder(t *testing.T) {
	if got := ipvs.Render(mustParse(t, ipvsadmOrderedSave)); got != ipvsadmOrderedSave {
		t.Errorf("Render(ParseSave(x)) != x:\n%s\nvs\n%s", got, ipvsadmOrderedSave)
	}
}

func TestParseSave(t *testing.T) {
	tests := []struct {
		name    string
		text    string
		want    []ipvs.VirtualServer
		wantErr bool
	}{
		{
			name: "options it does not model are skipped",
			text: `-A -t 10.96.0.10:80 -s rr -p 300 -M 255.255.255.0 --pe sip -b flag-1,flag-2 -o
-a -t 10.96.0.10:80 -r 10.244.1.2:8080 -m -w 1 -x 100 -y 10
-a -t 10.96.0.10:80 -r 10.244.1.3:8080 -i -w 2 --tun-type gue --tun-port 6080 --tun-nocsum
-A -f 7 -s rr
-a -f 7 -r 10.0.0.1:0 -g -w 1
-A --sctp-service [fd00::5]:9 -s sh -p 60 -M 64
-a --sctp-service [fd00::5]:9 -r [fd00::6]:9 -m -w 0
`,
			want: []ipvs.VirtualServer{
				svc("10.96.0.10", 80, ipvs.TCP, "rr", 300*time.Second, dst("10.244.1.2:8080", 1), dst("10.244.1.3:8080", 2)),
				svc("fd00::5", 9, ipvs.SCTP, "sh", 60*time.Second, dst("[fd00::6]:9", 0)),
			},
		},
		{name: "long options", text: "--add-service --udp-service 10.0.0.1:53 --scheduler wlc\n--add-server --udp-service 10.0.0.1:53 --real-server 10.0.0.2:53 --masquerading --weight 5\n",
			want: []ipvs.VirtualServer{svc("10.0.0.1", 53, ipvs.UDP, "wlc", 0, dst("10.0.0.2:53", 5))}},
		{name: "host names are refused", text: "-A -t kubernetes:https -s rr\n", wantErr: true},
		{name: "real server before its service", text: "-a -t 10.0.0.1:80 -r 10.0.0.2:80 -m -w 1\n", wantErr: true},
		{name: "service twice", text: "-A -t 10.0.0.1:80 -s rr\n-A -t 10.0.0.1:80 -s rr\n", wantErr: true},
		{name: "missing value", text: "-A -t 10.0.0.1:80 -s\n", wantErr: true},
		// Found by FuzzParseSave: accepted, it rendered as "-s " and did not parse back.
		{name: "service without scheduler", text: "-A -t 10.0.0.1:80\n", wantErr: true},
		// Found by FuzzParseSave: accepted as an invalid real server, rendered as "-r invalid AddrPort".
		{name: "real server line without -r", text: "-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -m -w 1\n", wantErr: true},
		{name: "unknown command", text: "-E -t 10.0.0.1:80 -s rr\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ipvs.ParseSave(tt.text)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if !tt.wantErr && !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestSnapshot(t *testing.T) {
	f := fake.New()
	in := goldenCases[1].vs
	for _, v := range in {
		if err := f.AddService(v.Service); err != nil {
			t.Fatal(err)
		}
		for _, d := range v.Destinations {
			if err := f.AddDestination(v.ServiceKey, d); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := f.SetConnections(in[0].ServiceKey, in[0].Destinations[0].DestinationKey, 5, 6); err != nil {
		t.Fatal(err)
	}
	got, err := ipvs.Snapshot(f)
	if err != nil {
		t.Fatal(err)
	}
	if a, b := ipvs.Render(got), ipvs.Render(in); a != b {
		t.Errorf("Render(Snapshot) != Render(input):\n%s\nvs\n%s", a, b)
	}
	// Snapshot is already in ipvsadm's order.
	if !reflect.DeepEqual(got, mustParse(t, ipvs.Render(got))) {
		t.Error("Snapshot is not in ipvsadm order")
	}

	boom := errors.New("boom")
	f.SetError(fake.Destinations, boom)
	if _, err := ipvs.Snapshot(f); !errors.Is(err, boom) {
		t.Errorf("Snapshot err = %v, want the Destinations error", err)
	}
}

func mustParse(t *testing.T, s string) []ipvs.VirtualServer {
	t.Helper()
	vs, err := ipvs.ParseSave(s)
	if err != nil {
		t.Fatal(err)
	}
	for i := range vs {
		if vs[i].Destinations == nil {
			vs[i].Destinations = []ipvs.Destination{}
		}
	}
	return vs
}

func TestErrorMapping(t *testing.T) {
	tests := []struct {
		err      *ipvs.Error
		exists   bool
		notFound bool
	}{
		{&ipvs.Error{Op: ipvs.OpAddService, Err: unix.EEXIST}, true, false},
		{&ipvs.Error{Op: ipvs.OpAddService, Err: unix.ENOENT}, false, false}, // no such scheduler
		{&ipvs.Error{Op: ipvs.OpUpdateService, Err: unix.ENOENT}, false, false},
		{&ipvs.Error{Op: ipvs.OpUpdateService, Err: unix.ESRCH}, false, true},
		{&ipvs.Error{Op: ipvs.OpDeleteDestination, Err: unix.ENOENT}, false, true},
		{&ipvs.Error{Op: ipvs.OpAddDestination, Err: unix.ESRCH}, false, true},
		{&ipvs.Error{Op: ipvs.OpServices, Err: errors.New("socket closed")}, false, false},
	}
	for _, tt := range tests {
		if got := errors.Is(tt.err, ipvs.ErrExists); got != tt.exists {
			t.Errorf("%v: Is(ErrExists) = %v", tt.err, got)
		}
		if got := errors.Is(tt.err, ipvs.ErrNotFound); got != tt.notFound {
			t.Errorf("%v: Is(ErrNotFound) = %v", tt.err, got)
		}
		if !errors.Is(tt.err, tt.err.Err) {
			t.Errorf("%v does not unwrap to its cause", tt.err)
		}
	}
}
