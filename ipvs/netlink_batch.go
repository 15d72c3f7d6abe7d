//go:build linux

package ipvs

import (
	"encoding/binary"
	"fmt"
	"net/netip"
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
	var scratch []byte
	sh := <-n.batch
	defer func() { n.batch <- sh }()
	for start := 0; start < len(adds); start += batchSize {
		end := min(start+batchSize, len(adds))
		for _, i := range n.batchOnce(sh, adds, start, end, errs, &scratch) {
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
// whose outcome is unknown. *scratch is the buffer the message is encoded in, reused from one to the next.
func (n *netlinkIPVS) batchOnce(sh *nl.SocketHandle, adds []Addition, start, end int, errs []error, scratch *[]byte) (unknown []int) {
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
	buf := (*scratch)[:0]
	for i := start; i <= last; i++ {
		if errs[i] == nil {
			buf = appendAdditionRequest(buf, n.family, adds[i], first+uint32(i-start), i == last)
		}
	}
	*scratch = buf
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

// appendAdditionRequest appends to buf the generic netlink request for a: the virtual server's attributes as
// AddService sends them (toMobyService's values: the family, protocol, address and port, the scheduler, the
// persistence flag and timeout, a one-address netmask; for a real server, its virtual server's key with the
// same defaults), and the real server's (masquerading, no connection thresholds). The bytes are those
// moby/ipvs and vishvananda/netlink would send (TestAdditionRequestBytes), written straight into buf. Built
// from their attribute trees, encoding took 3.1 of the 7.9 CPU seconds of a cold start's batches at 10,000
// Services in the lab VM, with about 60 allocations per request (BenchmarkAdditionRequest: 357 for a
// Service with five real servers, none now). a's addresses must have been checked (checkAddition).
func appendAdditionRequest(buf []byte, familyID uint16, a Addition, seq uint32, ack bool) []byte {
	native := binary.NativeEndian
	flags := uint16(unix.NLM_F_REQUEST)
	if ack {
		flags |= unix.NLM_F_ACK
	}
	cmd := uint8(ipvsCmdNewService)
	svc := a.Service
	if a.Op == OpAddDestination {
		cmd, svc = ipvsCmdNewDest, Service{ServiceKey: a.Service.ServiceKey}
	}
	start := len(buf)
	// struct nlmsghdr (its length is set at the end), then struct genlmsghdr.
	buf = native.AppendUint32(buf, 0)
	buf = native.AppendUint16(buf, familyID)
	buf = native.AppendUint16(buf, flags)
	buf = native.AppendUint32(buf, seq)
	buf = native.AppendUint32(buf, 0) // pid: the kernel's
	buf = append(buf, cmd, ipvsGenlVersion, 0, 0)

	nest := len(buf)
	buf = appendAttrHeader(buf, ipvsCmdAttrService)
	buf = appendUint16Attr(buf, ipvsSvcAttrAF, native.AppendUint16, family(svc.Address))
	buf = appendUint16Attr(buf, ipvsSvcAttrProtocol, native.AppendUint16, uint16(svc.Protocol))
	buf = appendAddrAttr(buf, ipvsSvcAttrAddr, svc.Address)
	buf = appendUint16Attr(buf, ipvsSvcAttrPort, binary.BigEndian.AppendUint16, svc.Port)
	buf = appendStringAttr(buf, ipvsSvcAttrSchedName, svc.Scheduler)
	var svcFlags, timeout uint32
	if secs := persistenceSeconds(svc.Persistence); secs > 0 {
		svcFlags, timeout = svcFlagPersistent, secs
	}
	netmask := uint32(netmaskV4)
	if svc.Address.Is6() {
		netmask = netmaskV6
	}
	// struct ip_vs_flags: the flags, and the mask of those that are set.
	var f [8]byte
	native.PutUint32(f[0:4], svcFlags)
	native.PutUint32(f[4:8], 0xffffffff)
	buf = appendAttr(buf, ipvsSvcAttrFlags, f[:])
	buf = appendUint32Attr(buf, ipvsSvcAttrTimeout, timeout)
	buf = appendUint32Attr(buf, ipvsSvcAttrNetmask, netmask)
	native.PutUint16(buf[nest:], uint16(len(buf)-nest))

	if a.Op == OpAddDestination {
		d := a.Destination
		nest = len(buf)
		buf = appendAttrHeader(buf, ipvsCmdAttrDest)
		buf = appendAddrAttr(buf, ipvsDestAttrAddr, d.Address)
		buf = appendUint16Attr(buf, ipvsDestAttrPort, binary.BigEndian.AppendUint16, d.Port)
		buf = appendUint32Attr(buf, ipvsDestAttrFwdMethod, ipvsConnFMasq)
		buf = appendUint32Attr(buf, ipvsDestAttrWeight, uint32(d.Weight))
		buf = appendUint32Attr(buf, ipvsDestAttrUThresh, 0)
		buf = appendUint32Attr(buf, ipvsDestAttrLThresh, 0)
		native.PutUint16(buf[nest:], uint16(len(buf)-nest))
	}
	native.PutUint32(buf[start:], uint32(len(buf)-start))
	return buf
}

// appendUint16Attr appends a two-byte attribute, in the byte order put writes (network order for ports).
func appendUint16Attr(buf []byte, typ uint16, put func([]byte, uint16) []byte, v uint16) []byte {
	buf = binary.NativeEndian.AppendUint16(buf, unix.SizeofRtAttr+2)
	buf = binary.NativeEndian.AppendUint16(buf, typ)
	return append(put(buf, v), 0, 0) // padded to NLA_ALIGNTO
}

// appendUint32Attr appends a four-byte attribute in host byte order.
func appendUint32Attr(buf []byte, typ uint16, v uint32) []byte {
	buf = binary.NativeEndian.AppendUint16(buf, unix.SizeofRtAttr+4)
	buf = binary.NativeEndian.AppendUint16(buf, typ)
	return binary.NativeEndian.AppendUint32(buf, v)
}

// appendAttrHeader appends a struct nlattr whose length the caller sets once its value (nested attributes)
// is appended.
func appendAttrHeader(buf []byte, typ uint16) []byte {
	buf = binary.NativeEndian.AppendUint16(buf, 0)
	return binary.NativeEndian.AppendUint16(buf, typ)
}

// appendAttr appends a struct nlattr holding value, padded to NLA_ALIGNTO; its length does not count the
// padding.
func appendAttr(buf []byte, typ uint16, value []byte) []byte {
	buf = binary.NativeEndian.AppendUint16(buf, uint16(unix.SizeofRtAttr+len(value)))
	buf = binary.NativeEndian.AppendUint16(buf, typ)
	buf = append(buf, value...)
	return appendPadding(buf, len(value))
}

// appendAddrAttr appends an address attribute: 4 bytes for IPv4, 16 for IPv6.
func appendAddrAttr(buf []byte, typ uint16, a netip.Addr) []byte {
	if a.Is4() {
		b := a.As4()
		return appendAttr(buf, typ, b[:])
	}
	b := a.As16()
	return appendAttr(buf, typ, b[:])
}

// appendStringAttr appends a NUL-terminated string attribute.
func appendStringAttr(buf []byte, typ uint16, s string) []byte {
	buf = binary.NativeEndian.AppendUint16(buf, uint16(unix.SizeofRtAttr+len(s)+1))
	buf = binary.NativeEndian.AppendUint16(buf, typ)
	buf = append(buf, s...)
	buf = append(buf, 0)
	return appendPadding(buf, len(s)+1)
}

func appendPadding(buf []byte, n int) []byte {
	for ; n%unix.RTA_ALIGNTO != 0; n++ {
		buf = append(buf, 0)
	}
	return buf
}
