package ipvs_test

import (
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
