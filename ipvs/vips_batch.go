//go:build linux

package ipvs

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

var _ VIPBatcher = (*dummyVIPs)(nil)

// bindBatch is how many addresses BindAll sends in one system call. Each request is 40 bytes (64 for
// IPv6), and the answers to a batch whose every request is refused fit the receive buffer many times over
// (batchSocket).
const bindBatch = 64

// BindAll binds addrs as Bind does, bindBatch of them per system call: the kernel handles the requests of
// one message in order, each as its own `ip addr add`, and sends an error back only for those it refuses
// (an address already bound is not an error); only the batch's last request asks for an acknowledgement,
// which, since the kernel handles them in order, says that the whole batch has been handled. At 10,000
// addresses this replaces 10,000 round trips by 157. An address whose outcome is unknown (the socket failed)
// or whose device is gone is bound again with Bind, which looks the device up.
// Equivalent to: `ip -batch` of `addr add VIP/32 dev NAME` lines (`VIP/128 ... nodad` for IPv6).
func (v *dummyVIPs) BindAll(addrs []netip.Addr) []error {
	errs := make([]error, len(addrs))
	var retry []int
	v.mu.Lock()
	for start := 0; start < len(addrs); start += bindBatch {
		end := min(start+bindBatch, len(addrs))
		var index int
		err := v.withLink(func(l netlink.Link) error { index = l.Attrs().Index; return nil })
		if err != nil {
			for i := start; i < end; i++ {
				errs[i] = fmt.Errorf("vips: ip addr add %s dev %s: %w", addrs[i], v.name, err)
			}
			continue
		}
		retry = append(retry, v.bindBatchLocked(index, addrs, start, end, errs)...)
	}
	v.mu.Unlock()
	for _, i := range retry {
		errs[i] = v.Bind(addrs[i])
	}
	return errs
}

// bindBatchLocked sends addrs[start:end] in one message and records each one's outcome in errs. It returns
// the indexes to bind again one by one. Called with v.mu held.
func (v *dummyVIPs) bindBatchLocked(index int, addrs []netip.Addr, start, end int, errs []error) (retry []int) {
	lastValid := -1
	for i := start; i < end; i++ {
		if a := addrs[i]; !a.IsValid() || a.Is4In6() || a.Zone() != "" {
			errs[i] = fmt.Errorf("vips: invalid address %q: %w", a, unix.EINVAL)
		} else {
			lastValid = i
		}
	}
	if lastValid < 0 {
		return nil
	}
	// Sequence numbers from the socket's own counter, which dumps on this socket also use: a reply of an
	// earlier request can never pass for one of this batch.
	first := atomic.AddUint32(&v.sh.Seq, uint32(end-start)) - uint32(end-start) + 1
	last := first + uint32(lastValid-start)
	var buf []byte
	for i := start; i <= lastValid; i++ {
		if errs[i] != nil {
			continue
		}
		flags := unix.NLM_F_CREATE | unix.NLM_F_EXCL
		if i == lastValid {
			flags |= unix.NLM_F_ACK
		}
		buf = append(buf, addrAddRequest(first+uint32(i-start), flags, index, addrs[i])...)
	}
	unknown := func() []int {
		for i := start; i <= lastValid; i++ {
			if errs[i] == nil {
				retry = append(retry, i)
			}
		}
		return retry
	}
	if err := unix.Sendto(v.sh.Socket.GetFd(), buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return unknown()
	}
	native := nl.NativeEndian()
	for {
		msgs, _, err := v.sh.Socket.Receive()
		if err != nil {
			return unknown()
		}
		for _, m := range msgs {
			seq := m.Header.Seq
			if m.Header.Type != unix.NLMSG_ERROR || seq < first || seq > last || len(m.Data) < 4 {
				continue // not an answer to this batch (a dump's reply to this socket is ours alone)
			}
			if errno := -int32(native.Uint32(m.Data[:4])); errno != 0 {
				i := start + int(seq-first)
				switch err := unix.Errno(errno); {
				case errors.Is(err, unix.EEXIST):
				case errors.Is(err, unix.ENODEV):
					// The device was deleted (and maybe re-created): Bind, and the next batch, look it up again.
					v.link = nil
					retry = append(retry, i)
				default:
					errs[i] = fmt.Errorf("vips: ip addr add %s/%d dev %s: %w", addrs[i], addrs[i].BitLen(), v.name, err)
				}
			}
			if seq == last {
				// In order: every request of the batch has been handled and its error, if any, read.
				return retry
			}
		}
	}
}

// addrAddRequest is the rtnetlink request Bind makes for a (as netlink.AddrAdd builds it for a host
// address: IFA_LOCAL and IFA_ADDRESS, no broadcast for a /32, IFA_F_NODAD for IPv6).
func addrAddRequest(seq uint32, flags, index int, a netip.Addr) []byte {
	family, ifaFlags := unix.AF_INET, uint8(0)
	if a.Is6() {
		family, ifaFlags = unix.AF_INET6, unix.IFA_F_NODAD
	}
	msg := nl.NewIfAddrmsg(family)
	msg.Index = uint32(index)
	msg.Prefixlen = uint8(a.BitLen())
	msg.Flags = ifaFlags
	ip := a.AsSlice()
	req := nl.NewNetlinkRequest(unix.RTM_NEWADDR, flags) // adds NLM_F_REQUEST
	req.Seq = seq
	req.AddData(msg)
	req.AddData(nl.NewRtAttr(unix.IFA_LOCAL, ip))
	req.AddData(nl.NewRtAttr(unix.IFA_ADDRESS, ip))
	return req.Serialize()
}

// listAddrs is List's dump: the addresses of the device index, parsed in place from the kernel's answer
// (netlink.AddrList builds an Addr with its own IPNet, attributes and label per address: at 10,000 VIPs,
// about 20 MB of garbage per audit). Called with v.mu held.
func (v *dummyVIPs) listAddrs(index int) ([]netip.Addr, error) {
	req := nl.NewNetlinkRequest(unix.RTM_GETADDR, unix.NLM_F_DUMP)
	req.AddData(nl.NewIfAddrmsg(unix.AF_UNSPEC))
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: v.sh}
	var out []netip.Addr
	native := nl.NativeEndian()
	err := req.ExecuteIter(unix.NETLINK_ROUTE, unix.RTM_NEWADDR, func(m []byte) bool {
		if len(m) < unix.SizeofIfAddrmsg || int(native.Uint32(m[4:8])) != index {
			return true
		}
		var local, address netip.Addr
		for attrs := m[unix.SizeofIfAddrmsg:]; len(attrs) >= unix.SizeofRtAttr; {
			l, t := int(native.Uint16(attrs[0:2])), native.Uint16(attrs[2:4])
			if l < unix.SizeofRtAttr || l > len(attrs) {
				break
			}
			if a, ok := netip.AddrFromSlice(attrs[unix.SizeofRtAttr:l]); ok {
				switch t {
				case unix.IFA_LOCAL:
					local = a
				case unix.IFA_ADDRESS:
					address = a
				}
			}
			attrs = attrs[min((l+unix.RTA_ALIGNTO-1)&^(unix.RTA_ALIGNTO-1), len(attrs)):]
		}
		// As netlink.AddrList: the local address, else (a point-to-point peer's) the address.
		if local.IsValid() {
			out = append(out, local)
		} else if address.IsValid() {
			out = append(out, address)
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	return slices.Clip(out), nil
}
