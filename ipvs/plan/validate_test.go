package plan

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
)

func TestValidate(t *testing.T) {
	on := func(vips ...netip.Addr) Desired { return Desired{VIPs: vips} }
	with := func(d Desired, servers ...ipvs.VirtualServer) Desired { d.Servers = servers; return d }
	tests := []struct {
		name  string
		d     Desired
		valid bool
	}{
		{"empty", Desired{}, true},
		{"VIPs without servers", on(vip4, vip6), true},
		{"dual-stack with real servers, weight 0 allowed", with(on(vip4, vip6),
			vs(rr(http), dest("10.244.1.5", 8080, 1), dest("10.244.1.6", 8080, 0)),
			vs(rr(http6), dest("fd00:244::5", 8080, 3))), true},
		{"VIP listed twice", on(vip4, vip4), false},
		{"invalid VIP", on(netip.Addr{}), false},
		{"zoned VIP", on(netip.MustParseAddr("fe80::1%eth0")), false},
		{"IPv4-mapped VIP", on(netip.MustParseAddr("::ffff:10.96.0.10")), false},
		{"server off its VIPs", with(on(vip6), vs(rr(http))), false},
		{"server listed twice", with(on(vip4), vs(rr(http)), vs(rr(http))), false},
		{"unknown protocol", with(on(vip4), vs(rr(ipvs.ServiceKey{Address: vip4, Port: 80, Protocol: 1}))), false},
		{"real server of the other family", with(on(vip4), vs(rr(http), dest("fd00:244::5", 8080, 1))), false},
		{"real server listed twice", with(on(vip4), vs(rr(http), dest("10.244.1.5", 8080, 1), dest("10.244.1.5", 8080, 2))), false},
		{"negative weight", with(on(vip4), vs(rr(http), dest("10.244.1.5", 8080, -1))), false},
		{"zoned real server", with(on(vip6), vs(rr(http6), dest("fe80::5%eth0", 8080, 1))), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.d.Validate()
			if tt.valid && err != nil {
				t.Errorf("Validate() = %v, want nil", err)
			}
			if !tt.valid && !errors.Is(err, ErrInvalidDesired) {
				t.Errorf("Validate() = %v, want ErrInvalidDesired", err)
			}
		})
	}
}
