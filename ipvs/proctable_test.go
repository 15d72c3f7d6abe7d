package ipvs_test

import (
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
)

func observed(addrPort string, w, active, inactive int) ipvs.ObservedDestination {
	return ipvs.ObservedDestination{Destination: dst(addrPort, w),
		DestinationStats: ipvs.DestinationStats{ActiveConnections: active, InactiveConnections: inactive}}
}

const procHeader = "IP Virtual Server version 1.2.1 (size=4096)\n" +
	"Prot LocalAddress:Port Scheduler Flags\n" +
	"  -> RemoteAddress:Port Forward Weight ActiveConn InActConn\n"

func TestParseProcTable(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      string
		want    map[ipvs.ServiceKey][]ipvs.ObservedDestination
		wantErr bool
	}{
		{name: "empty table", in: procHeader, want: map[ipvs.ServiceKey][]ipvs.ObservedDestination{}},
		{
			name: "IPv4, IPv6, persistence, empty virtual server",
			in: procHeader +
				"TCP  0A600001:0050 rr \n" +
				"  -> 0AF40105:1F90      Masq    1      2          3         \n" +
				"  -> 0AF40106:1F90      Masq    0      0          7         \n" +
				"UDP  0A60000A:0035 lc persistent 2700000 FFFFFFFF\n" +
				"SCTP  0A60000B:0BB8 rr \n" +
				"TCP  [fd00:0000:0000:0000:0000:0000:0000:0010]:01BB sh ops \n" +
				"  -> [fd00:0244:0000:0000:0000:0000:0000:0005]:20FB      Masq    5      0          0         \n",
			want: map[ipvs.ServiceKey][]ipvs.ObservedDestination{
				skey("10.96.0.1:80", ipvs.TCP):     {observed("10.244.1.5:8080", 1, 2, 3), observed("10.244.1.6:8080", 0, 0, 7)},
				skey("10.96.0.10:53", ipvs.UDP):    {},
				skey("10.96.0.11:3000", ipvs.SCTP): {},
				skey("[fd00::10]:443", ipvs.TCP):   {observed("[fd00:244::5]:8443", 5, 0, 0)},
			},
		},
		{
			name: "firewall marks and other protocols are skipped with their real servers",
			in: procHeader +
				"FWM  00000001 rr \n" +
				"  -> 0AF40105:0000      Route   1      0          0         \n" +
				"AH  0A600001:0000 rr \n" +
				"  -> 0AF40107:0000      Masq    1      0          0         \n" +
				"TCP  0A600001:0050 rr \n" +
				"  -> 0AF40105:1F90      Masq    1      0          0         \n",
			want: map[ipvs.ServiceKey][]ipvs.ObservedDestination{
				skey("10.96.0.1:80", ipvs.TCP): {observed("10.244.1.5:8080", 1, 0, 0)},
			},
		},
		{
			name: "a virtual server listed twice (a read overlapping a change): the later listing wins",
			in: procHeader +
				"TCP  0A600001:0050 rr \n" +
				"  -> 0AF40105:1F90      Masq    1      0          0         \n" +
				"TCP  0A600002:0050 rr \n" +
				"TCP  0A600001:0050 rr \n" +
				"  -> 0AF40106:1F90      Masq    1      0          0         \n",
			want: map[ipvs.ServiceKey][]ipvs.ObservedDestination{
				skey("10.96.0.1:80", ipvs.TCP): {observed("10.244.1.6:8080", 1, 0, 0)},
				skey("10.96.0.2:80", ipvs.TCP): {},
			},
		},
		{name: "not the table", in: "Prot LocalAddress:Port\n", wantErr: true},
		{name: "empty file", in: "", wantErr: true},
		{name: "bad address", in: procHeader + "TCP  0A6000:0050 rr \n", wantErr: true},
		{name: "bad weight", in: procHeader + "TCP  0A600001:0050 rr \n  -> 0AF40105:1F90      Masq    x      0          0\n", wantErr: true},
		{name: "short real server line", in: procHeader + "TCP  0A600001:0050 rr \n  -> 0AF40105:1F90 Masq 1\n", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ipvs.ParseProcTable(strings.NewReader(tc.in))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error: %v", err, tc.wantErr)
			}
			if !tc.wantErr && !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %v\nwant %v", got, tc.want)
			}
		})
	}
}

func skey(addrPort string, p ipvs.Protocol) ipvs.ServiceKey {
	ap := netip.MustParseAddrPort(addrPort)
	return ipvs.ServiceKey{Address: ap.Addr(), Port: ap.Port(), Protocol: p}
}

// BenchmarkParseProcTable: /proc/net/ip_vs with 10,000 virtual servers x 5 real servers, the table the
// audit reads in one go at the scale of make bench.
func BenchmarkParseProcTable(b *testing.B) {
	var sb strings.Builder
	sb.WriteString(procHeader)
	for i := range 10_000 {
		fmt.Fprintf(&sb, "TCP  %08X:0050 rr \n", 0x0A600000+i)
		for j := range 5 {
			fmt.Fprintf(&sb, "  -> %08X:1F90      Masq    1      0          0         \n", 0x0AF40000+i*5+j)
		}
	}
	in := sb.String()
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		if all, err := ipvs.ParseProcTable(strings.NewReader(in)); err != nil || len(all) != 10_000 {
			b.Fatalf("%d virtual servers, %v", len(all), err)
		}
	}
}

// FuzzParseProcTable: any input is parsed or refused, never a panic, and every real server it reports
// belongs to a TCP, UDP or SCTP virtual server with a valid address.
func FuzzParseProcTable(f *testing.F) {
	f.Add(procHeader + "TCP  0A600001:0050 rr \n  -> 0AF40105:1F90      Masq    1      2          3\n")
	f.Add(procHeader + "UDP  [fd00:0000:0000:0000:0000:0000:0000:0010]:0035 rr \n  -> [fd00::5]:0035 Masq 1 0 0\n")
	f.Add(procHeader + "FWM  00000001 rr \n  -> 0AF40105:0000      Route   1      0          0\n")
	f.Fuzz(func(t *testing.T, in string) {
		all, err := ipvs.ParseProcTable(strings.NewReader(in))
		if err != nil {
			return
		}
		for k := range all {
			if !k.Address.IsValid() || (k.Protocol != ipvs.TCP && k.Protocol != ipvs.UDP && k.Protocol != ipvs.SCTP) {
				t.Errorf("reported %+v", k)
			}
		}
	})
}
