package main

import (
	"net/netip"
	"testing"

	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

func verdictAttr(t *testing.T, chain string) []byte {
	t.Helper()
	b, err := netlink.MarshalAttributes([]netlink.Attribute{
		{Type: unix.NFTA_VERDICT_CODE, Data: []byte{0xff, 0xff, 0xff, 0xfc}}, // NFT_GOTO
		{Type: unix.NFTA_VERDICT_CHAIN, Data: []byte(chain + "\x00")},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeServiceIP(t *testing.T) {
	chain := "service-ULMVA6XW-bench/s00001/tcp/http"
	tests := []struct {
		name    string
		key     []byte
		val     []byte
		want    serviceIP
		wantErr bool
	}{
		{
			name: "10.96.64.2 . tcp . 80",
			key:  []byte{10, 96, 64, 2, unix.IPPROTO_TCP, 0, 0, 0, 0, 80, 0, 0},
			val:  verdictAttr(t, chain),
			want: serviceIP{addr: netip.MustParseAddr("10.96.64.2"), proto: unix.IPPROTO_TCP, port: 80, chain: chain},
		},
		{
			name: "udp 53, port above 255",
			key:  []byte{10, 96, 0, 10, unix.IPPROTO_UDP, 0, 0, 0, 0x1f, 0x90, 0, 0},
			val:  verdictAttr(t, "service-X"),
			want: serviceIP{addr: netip.MustParseAddr("10.96.0.10"), proto: unix.IPPROTO_UDP, port: 8080, chain: "service-X"},
		},
		{name: "short key", key: []byte{10, 96, 64, 2}, val: verdictAttr(t, chain), wantErr: true},
		{name: "verdict without chain", key: make([]byte, 12), val: nil, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeServiceIP(tt.key, tt.val)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err == nil && got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestDecodeAddrPort(t *testing.T) {
	got, err := decodeAddrPort([]byte{10, 244, 16, 1, 0x1f, 0x90, 0, 0})
	if err != nil || got != netip.MustParseAddrPort("10.244.16.1:8080") {
		t.Errorf("got %v, %v", got, err)
	}
	if _, err := decodeAddrPort([]byte{10, 244, 16, 1}); err == nil {
		t.Error("a 4-byte value decoded")
	}
}

// The expressions nft 1.0 compiles kube-proxy's two DNAT rules into (`nft --debug=netlink`).
func TestDNATTargets(t *testing.T) {
	tests := []struct {
		name       string
		exprs      []expr.Any
		wantMap    string
		wantDirect []netip.AddrPort
		wantErr    bool
	}{
		{
			name: "numgen random mod 5 map",
			exprs: []expr.Any{
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
				&expr.Numgen{Register: 1, Modulus: 5, Type: unix.NFT_NG_RANDOM},
				&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: "__map7"},
				&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 9, Specified: true},
			},
			wantMap: "__map7",
		},
		{
			name: "dnat to one endpoint, 16-byte registers",
			exprs: []expr.Any{
				&expr.Immediate{Register: 1, Data: []byte{10, 244, 16, 1}},
				&expr.Immediate{Register: 2, Data: []byte{0x1f, 0x90}},
				&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2, Specified: true},
			},
			wantDirect: []netip.AddrPort{netip.MustParseAddrPort("10.244.16.1:8080")},
		},
		{
			name: "dnat to one endpoint, 32-bit registers",
			exprs: []expr.Any{
				&expr.Immediate{Register: unix.NFT_REG32_00, Data: []byte{10, 244, 16, 1}},
				&expr.Immediate{Register: unix.NFT_REG32_01, Data: []byte{0x1f, 0x90}},
				&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: unix.NFT_REG32_01, Specified: true},
			},
			wantDirect: []netip.AddrPort{netip.MustParseAddrPort("10.244.16.1:8080")},
		},
		{
			name: "masquerade jump: no DNAT",
			exprs: []expr.Any{
				&expr.Verdict{Kind: expr.VerdictJump, Chain: "mark-for-masquerade"},
			},
		},
		{
			name: "a DNAT from a register nothing loads",
			exprs: []expr.Any{
				&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2},
			},
			wantErr: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, direct, err := dnatTargets(tt.exprs)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if m != tt.wantMap {
				t.Errorf("map = %q, want %q", m, tt.wantMap)
			}
			if len(direct) != len(tt.wantDirect) {
				t.Fatalf("direct = %v, want %v", direct, tt.wantDirect)
			}
			for i := range direct {
				if direct[i] != tt.wantDirect[i] {
					t.Errorf("direct = %v, want %v", direct, tt.wantDirect)
				}
			}
		})
	}
}
