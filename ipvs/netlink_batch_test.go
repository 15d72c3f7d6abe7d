//go:build linux

package ipvs

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// referenceRequest is the request as Batch encoded it before appendAdditionRequest (moby/ipvs's way: the
// attribute trees of vishvananda/netlink, with toMobyService's values). appendAdditionRequest must send
// exactly these bytes.
func referenceRequest(familyID uint16, a Addition, seq uint32, ack bool) []byte {
	flags := 0
	if ack {
		flags = unix.NLM_F_ACK
	}
	cmd := uint8(ipvsCmdNewService)
	svc := a.Service
	if a.Op == OpAddDestination {
		cmd, svc = ipvsCmdNewDest, Service{ServiceKey: a.Service.ServiceKey}
	}
	req := nl.NewNetlinkRequest(int(familyID), flags)
	req.Seq = seq
	req.AddData(genlHeader{cmd: cmd, version: ipvsGenlVersion})
	req.AddData(serviceAttr(svc))
	if a.Op == OpAddDestination {
		req.AddData(destinationAttr(a.Destination))
	}
	return req.Serialize()
}

func serviceAttr(s Service) *nl.RtAttr {
	ms, err := toMobyService(s)
	if err != nil {
		panic(err)
	}
	attr := nl.NewRtAttr(ipvsCmdAttrService, nil)
	attr.AddRtAttr(ipvsSvcAttrAF, nl.Uint16Attr(ms.AddressFamily))
	attr.AddRtAttr(ipvsSvcAttrProtocol, nl.Uint16Attr(ms.Protocol))
	attr.AddRtAttr(ipvsSvcAttrAddr, s.Address.AsSlice())
	attr.AddRtAttr(ipvsSvcAttrPort, binary.BigEndian.AppendUint16(nil, ms.Port))
	attr.AddRtAttr(ipvsSvcAttrSchedName, nl.ZeroTerminated(ms.SchedName))
	flags := make([]byte, 8)
	nl.NativeEndian().PutUint32(flags[0:4], ms.Flags)
	nl.NativeEndian().PutUint32(flags[4:8], 0xffffffff)
	attr.AddRtAttr(ipvsSvcAttrFlags, flags)
	attr.AddRtAttr(ipvsSvcAttrTimeout, nl.Uint32Attr(ms.Timeout))
	attr.AddRtAttr(ipvsSvcAttrNetmask, nl.Uint32Attr(ms.Netmask))
	return attr
}

func destinationAttr(d Destination) *nl.RtAttr {
	attr := nl.NewRtAttr(ipvsCmdAttrDest, nil)
	attr.AddRtAttr(ipvsDestAttrAddr, d.Address.AsSlice())
	attr.AddRtAttr(ipvsDestAttrPort, binary.BigEndian.AppendUint16(nil, d.Port))
	attr.AddRtAttr(ipvsDestAttrFwdMethod, nl.Uint32Attr(ipvsConnFMasq))
	attr.AddRtAttr(ipvsDestAttrWeight, nl.Uint32Attr(uint32(d.Weight)))
	attr.AddRtAttr(ipvsDestAttrUThresh, nl.Uint32Attr(0))
	attr.AddRtAttr(ipvsDestAttrLThresh, nl.Uint32Attr(0))
	return attr
}

// genlHeader is struct genlmsghdr.
type genlHeader struct{ cmd, version uint8 }

func (h genlHeader) Len() int { return unix.GENL_HDRLEN }

func (h genlHeader) Serialize() []byte { return []byte{h.cmd, h.version, 0, 0} }

func additions() []Addition {
	svc := func(addr string, port uint16, proto Protocol, sched string, persist time.Duration) Service {
		return Service{ServiceKey: ServiceKey{Address: netip.MustParseAddr(addr), Port: port, Protocol: proto},
			Scheduler: sched, Persistence: persist}
	}
	dst := func(addr string, port uint16, w int) Destination {
		return Destination{DestinationKey: DestinationKey{Address: netip.MustParseAddr(addr), Port: port}, Weight: w}
	}
	v4 := svc("10.96.0.10", 80, TCP, "rr", 0)
	sticky := svc("10.96.1.2", 443, TCP, "sh", 3*time.Hour)
	v6 := svc("fd00::10", 53, UDP, "lc", 1500*time.Millisecond) // rounds up to 2 s
	return []Addition{
		{Op: OpAddService, Service: v4},
		{Op: OpAddDestination, Service: v4, Destination: dst("10.244.1.5", 8080, 1)},
		{Op: OpAddDestination, Service: v4, Destination: dst("10.244.2.7", 65535, 0)},
		{Op: OpAddService, Service: sticky},
		{Op: OpAddDestination, Service: sticky, Destination: dst("10.244.3.1", 8443, 100)},
		{Op: OpAddService, Service: v6},
		{Op: OpAddDestination, Service: v6, Destination: dst("fd00:10:244::5", 53, 2)},
		// Scheduler names of every length modulo 4: the NUL-terminated name's padding.
		{Op: OpAddService, Service: svc("10.96.0.11", 80, SCTP, "wrr", 0)},
		{Op: OpAddService, Service: svc("10.96.0.12", 80, TCP, "wlc", 0)},
		{Op: OpAddService, Service: svc("10.96.0.13", 80, TCP, "sed", 0)},
		{Op: OpAddService, Service: svc("10.96.0.14", 80, TCP, "lblcr", 0)},
		{Op: OpAddService, Service: svc("10.96.0.15", 80, TCP, "", 0)},
	}
}

// TestAdditionRequestBytes: a batch's requests are byte for byte the ones the library's attribute trees
// encode, alone and several in one buffer, with and without the acknowledgement flag.
func TestAdditionRequestBytes(t *testing.T) {
	const familyID = 0x23
	adds := additions()
	batch, want := make([]byte, 0, 4096), make([]byte, 0, 4096)
	for i, a := range adds {
		for _, ack := range []bool{false, true} {
			seq := uint32(1000 + i)
			got := appendAdditionRequest(nil, familyID, a, seq, ack)
			ref := referenceRequest(familyID, a, seq, ack)
			if !bytes.Equal(got, ref) {
				t.Errorf("%s %s (ack %v):\n got %x\nwant %x", a.Op, additionObject(a), ack, got, ref)
			}
		}
		batch = appendAdditionRequest(batch, familyID, a, uint32(i), i == len(adds)-1)
		want = append(want, referenceRequest(familyID, a, uint32(i), i == len(adds)-1)...)
	}
	if !bytes.Equal(batch, want) {
		t.Errorf("a batch of %d requests differs:\n got %x\nwant %x", len(adds), batch, want)
	}
}

// BenchmarkAdditionRequest encodes a cold start's Service (a virtual server and five real servers) into one
// message, as Batch does, with the library's attribute trees ("trees") and appended in place ("append").
func BenchmarkAdditionRequest(b *testing.B) {
	svc := Service{ServiceKey: ServiceKey{Address: netip.MustParseAddr("10.96.0.10"), Port: 80, Protocol: TCP}, Scheduler: "rr"}
	adds := make([]Addition, 0, 6)
	adds = append(adds, Addition{Op: OpAddService, Service: svc})
	for i := range 5 {
		adds = append(adds, Addition{Op: OpAddDestination, Service: svc,
			Destination: Destination{DestinationKey: DestinationKey{Address: netip.AddrFrom4([4]byte{10, 244, 1, byte(i + 1)}), Port: 8080}, Weight: 1}})
	}
	var sink []byte
	b.Run("trees", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var buf []byte //nolint:prealloc // as Batch encoded them: one request at a time, appended
			for i, a := range adds {
				buf = append(buf, referenceRequest(0x23, a, uint32(i), i == len(adds)-1)...)
			}
			sink = buf
		}
	})
	b.Run("append", func(b *testing.B) {
		b.ReportAllocs()
		var scratch []byte
		for b.Loop() {
			buf := scratch[:0]
			for i, a := range adds {
				buf = appendAdditionRequest(buf, 0x23, a, uint32(i), i == len(adds)-1)
			}
			scratch = buf
		}
		sink = scratch
	})
	_ = sink
}
