//go:build linux

package ipvs

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

var _ Batcher = (*netlinkIPVS)(nil)

// The IPVS generic netlink protocol (include/uapi/linux/ip_vs.h): the commands and attributes a batch sends.
const (
	ipvsGenlVersion   = 1
	ipvsCmdNewService = 1
	ipvsCmdNewDest    = 5

	ipvsCmdAttrService = 1
	ipvsCmdAttrDest    = 2

	ipvsSvcAttrAF        = 1
	ipvsSvcAttrProtocol  = 2
	ipvsSvcAttrAddr      = 3
	ipvsSvcAttrPort      = 4
	ipvsSvcAttrSchedName = 6
	ipvsSvcAttrFlags     = 7
	ipvsSvcAttrTimeout   = 8
	ipvsSvcAttrNetmask   = 9

	ipvsDestAttrAddr      = 1
	ipvsDestAttrPort      = 2
	ipvsDestAttrFwdMethod = 3
	ipvsDestAttrWeight    = 4
	ipvsDestAttrUThresh   = 5
	ipvsDestAttrLThresh   = 6

	ipvsConnFMasq = 0 // IP_VS_CONN_F_MASQ
)

// openBatchSockets opens n generic netlink sockets in the namespace at path ("": the caller's) for Batch.
func openBatchSockets(path string, n int) ([]*nl.SocketHandle, error) {
	ns := netns.None()
	if path != "" {
		var err error
		if ns, err = netns.GetFromPath(path); err != nil {
			return nil, err
		}
		defer ns.Close()
	}
	var out []*nl.SocketHandle
	for range n {
		s, err := nl.GetNetlinkSocketAt(ns, netns.None(), unix.NETLINK_GENERIC)
		if err != nil {
			for _, o := range out {
				o.Socket.Close()
			}
			return nil, err
		}
		if err := batchSocket(s); err != nil {
			s.Close()
			for _, o := range out {
				o.Socket.Close()
			}
			return nil, err
		}
		out = append(out, &nl.SocketHandle{Socket: s})
	}
	return out, nil
}

// batchReplyTimeout bounds each wait for a batch's answers: an answer the kernel could not queue must cost
// a retry one by one (the batch's outcomes are then unknown), never a hang.
const batchReplyTimeout = 5 * time.Second

// batchSocket readies a socket for batches. The kernel answers every refused request of a batch at once,
// and drops what does not fit the socket's receive buffer; on Debian's 6.12 a batch of 256 refused VIP
// binds already did not fit, and its last answer never came. With NETLINK_CAP_ACK an error comes back
// without a copy of the request, so a batch whose every request is refused fits many times over, and a
// receive timeout turns a lost answer into a retry.
func batchSocket(s *nl.NetlinkSocket) error {
	if err := unix.SetsockoptInt(s.GetFd(), unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1); err != nil {
		return fmt.Errorf("netlink: NETLINK_CAP_ACK: %w", err)
	}
	tv := unix.NsecToTimeval(batchReplyTimeout.Nanoseconds())
	if err := s.SetReceiveTimeout(&tv); err != nil {
		return fmt.Errorf("netlink: receive timeout: %w", err)
	}
	return nil
}

// Batch sends the additions in one message per batchSize of them: the kernel handles a message's requests
// in order, each as its own command (ipvsadm's -A or -a), sends an error back only for those it refuses,
// and acknowledges the last one, which says that all were handled. Each addition's outcome is what
// AddService or AddDestination would have returned; if the socket fails, the additions whose outcome is
// unknown are made again one by one (an addition that went through then answers ErrExists, which callers
// already take as "someone made it").
func (n *netlinkIPVS) Batch(adds []Addition) []error {
	errs := make([]error, len(adds))
	sh := <-n.batch
	defer func() { n.batch <- sh }()
	for start := 0; start < len(adds); start += batchSize {
		end := min(start+batchSize, len(adds))
		for _, i := range n.batchOnce(sh, adds, start, end, errs) {
			switch a := adds[i]; a.Op {
			case OpAddService:
				errs[i] = n.AddService(a.Service)
			default:
				errs[i] = n.AddDestination(a.Service.ServiceKey, a.Destination)
			}
		}
	}
	return errs
}

// batchSize is how many additions go in one message: a real server's request is about 140 bytes, and the
// answers to a batch whose every addition is refused fit the receive buffer many times over (batchSocket).
const batchSize = 64

// batchOnce sends adds[start:end] in one message and records their outcomes in errs; it returns the indexes
// whose outcome is unknown.
func (n *netlinkIPVS) batchOnce(sh *nl.SocketHandle, adds []Addition, start, end int, errs []error) (unknown []int) {
	last := -1
	for i := start; i < end; i++ {
		if err := checkAddition(adds[i]); err != nil {
			errs[i] = err
		} else {
			last = i
		}
	}
	if last < 0 {
		return nil
	}
	first := atomic.AddUint32(&sh.Seq, uint32(end-start)) - uint32(end-start) + 1
	lastSeq := first + uint32(last-start)
	var buf []byte
	for i := start; i <= last; i++ {
		if errs[i] == nil {
			buf = append(buf, n.additionRequest(adds[i], first+uint32(i-start), i == last)...)
		}
	}
	pending := func() []int {
		for i := start; i <= last; i++ {
			if errs[i] == nil {
				unknown = append(unknown, i)
			}
		}
		return unknown
	}
	if err := unix.Sendto(sh.Socket.GetFd(), buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return pending()
	}
	native := nl.NativeEndian()
	for {
		msgs, _, err := sh.Socket.Receive()
		if err != nil {
			// Some answers were read: errs holds their errors, and the additions that went through are
			// made again, answering ErrExists. Treat every one not known to have failed as unknown.
			return pending()
		}
		for _, m := range msgs {
			seq := m.Header.Seq
			if m.Header.Type != unix.NLMSG_ERROR || seq < first || seq > lastSeq || len(m.Data) < 4 {
				continue
			}
			if errno := -int32(native.Uint32(m.Data[:4])); errno != 0 {
				i := start + int(seq-first)
				a := adds[i]
				errs[i] = &Error{Op: a.Op, Object: additionObject(a), Err: unix.Errno(errno)}
			}
			if seq == lastSeq {
				return nil
			}
		}
	}
}

func checkAddition(a Addition) error {
	switch a.Op {
	case OpAddService, OpAddDestination:
	default:
		return &Error{Op: a.Op, Object: additionObject(a), Err: fmt.Errorf("not an addition: %w", unix.EINVAL)}
	}
	if err := checkAddr(a.Service.Address); err != nil {
		return &Error{Op: a.Op, Object: additionObject(a), Err: err}
	}
	if a.Op == OpAddDestination {
		if err := checkAddr(a.Destination.Address); err != nil {
			return &Error{Op: a.Op, Object: additionObject(a), Err: err}
		}
	}
	return nil
}

func additionObject(a Addition) string {
	if a.Op == OpAddDestination {
		return a.Service.ServiceKey.String() + " -r " + a.Destination.DestinationKey.String()
	}
	return a.Service.ServiceKey.String()
}

// additionRequest is the generic netlink request for a: the virtual server's attributes as AddService sends
// them (for a real server, its virtual server's key with the same defaults), and the real server's.
func (n *netlinkIPVS) additionRequest(a Addition, seq uint32, ack bool) []byte {
	flags := 0
	if ack {
		flags = unix.NLM_F_ACK
	}
	cmd := uint8(ipvsCmdNewService)
	svc := a.Service
	if a.Op == OpAddDestination {
		cmd, svc = ipvsCmdNewDest, Service{ServiceKey: a.Service.ServiceKey}
	}
	req := nl.NewNetlinkRequest(int(n.family), flags)
	req.Seq = seq
	req.AddData(genlHeader{cmd: cmd, version: ipvsGenlVersion})
	req.AddData(serviceAttr(svc))
	if a.Op == OpAddDestination {
		req.AddData(destinationAttr(a.Destination))
	}
	return req.Serialize()
}

// serviceAttr is IPVS_CMD_ATTR_SERVICE for s, with toMobyService's values: the family, protocol, address
// and port, the scheduler, the persistence flag and timeout, and a one-address netmask.
func serviceAttr(s Service) *nl.RtAttr {
	ms, _ := toMobyService(s) // the address was checked
	attr := nl.NewRtAttr(ipvsCmdAttrService, nil)
	attr.AddRtAttr(ipvsSvcAttrAF, nl.Uint16Attr(ms.AddressFamily))
	attr.AddRtAttr(ipvsSvcAttrProtocol, nl.Uint16Attr(ms.Protocol))
	attr.AddRtAttr(ipvsSvcAttrAddr, s.Address.AsSlice())
	attr.AddRtAttr(ipvsSvcAttrPort, binary.BigEndian.AppendUint16(nil, ms.Port))
	attr.AddRtAttr(ipvsSvcAttrSchedName, nl.ZeroTerminated(ms.SchedName))
	flags := make([]byte, 8) // struct ip_vs_flags: the flags, and the mask of those that are set
	nl.NativeEndian().PutUint32(flags[0:4], ms.Flags)
	nl.NativeEndian().PutUint32(flags[4:8], 0xffffffff)
	attr.AddRtAttr(ipvsSvcAttrFlags, flags)
	attr.AddRtAttr(ipvsSvcAttrTimeout, nl.Uint32Attr(ms.Timeout))
	attr.AddRtAttr(ipvsSvcAttrNetmask, nl.Uint32Attr(ms.Netmask))
	return attr
}

// destinationAttr is IPVS_CMD_ATTR_DEST for a masquerading real server, no connection thresholds.
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
