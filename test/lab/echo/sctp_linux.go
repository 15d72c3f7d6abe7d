package echo

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// SCTP over one-to-one (SOCK_STREAM) sockets, which read and write like a TCP byte stream, so the line and
// HTTP protocols of handleTCPConn work unchanged. Go's net package has no SCTP; the sockets are made with
// x/sys/unix, non-blocking, and handed to os.NewFile, whose runtime poller then gives Accept, Read and Write
// deadlines and lets Close wake a blocked Accept, as net.Conn users expect. (ishidawataru/sctp, which
// Kubernetes' agnhost uses, blocks in accept and connect and has no deadlines: a client could not time out.)

// sctpSupported reports whether this kernel can make SCTP sockets (the sctp module loaded or loadable).
func sctpSupported() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_SCTP)
	if err != nil {
		return fmt.Errorf("an SCTP socket: %w", err)
	}
	return unix.Close(fd)
}

// sctpConn is one association: an os.File (poller-backed Read, Write, deadlines, Close) with addresses.
type sctpConn struct {
	*os.File
	local, remote net.Addr
}

var _ net.Conn = (*sctpConn)(nil)

func (c *sctpConn) LocalAddr() net.Addr  { return c.local }
func (c *sctpConn) RemoteAddr() net.Addr { return c.remote }

// SetLinger(0) makes Close abort the association (an ABORT chunk) instead of shutting it down gracefully, as
// it resets a TCP connection: the client does so with a fixed source port.
func (c *sctpConn) SetLinger(sec int) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptLinger(int(fd), unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: int32(sec)})
	}); err != nil {
		return err
	}
	return serr
}

// sctpAddr is a net.Addr for SCTP endpoints (net has none).
type sctpAddr netip.AddrPort

func (a sctpAddr) Network() string { return "sctp" }
func (a sctpAddr) String() string  { return netip.AddrPort(a).String() }

// sctpListener accepts associations on one port.
type sctpListener struct {
	f      *os.File
	addr   net.Addr
	closed atomic.Bool
}

var _ net.Listener = (*sctpListener)(nil)

// listenSCTP listens on host:port; an empty host listens on every IPv4 and IPv6 address (one IPv6 socket that
// also takes IPv4, as Go's net does for "tcp"), or on every IPv4 address where the kernel has no IPv6.
// Equivalent to: `socat SCTP-LISTEN:port,fork ...`.
func listenSCTP(host string, port int) (net.Listener, error) {
	var ip netip.Addr
	if host != "" {
		var err error
		if ip, err = netip.ParseAddr(host); err != nil {
			return nil, fmt.Errorf("sctp listen address %q: %w", host, err)
		}
	}
	family := unix.AF_INET
	if !ip.IsValid() || ip.Is6() {
		family = unix.AF_INET6
	}
	fd, err := sctpSocket(family)
	if err != nil && !ip.IsValid() && errors.Is(err, unix.EAFNOSUPPORT) {
		family = unix.AF_INET
		fd, err = sctpSocket(family)
	}
	if err != nil {
		return nil, err
	}
	if err := func() error {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			return err
		}
		if family == unix.AF_INET6 && !ip.IsValid() {
			if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0); err != nil {
				return err
			}
		}
		if !ip.IsValid() {
			ip = netip.IPv4Unspecified()
			if family == unix.AF_INET6 {
				ip = netip.IPv6Unspecified()
			}
		}
		if err := unix.Bind(fd, sockaddr(netip.AddrPortFrom(ip, uint16(port)))); err != nil {
			return err
		}
		return unix.Listen(fd, unix.SOMAXCONN)
	}(); err != nil {
		_ = unix.Close(fd)
		return nil, os.NewSyscallError("sctp listen", err)
	}
	l := &sctpListener{f: os.NewFile(uintptr(fd), "sctp-listener")}
	l.addr = localAddr(fd)
	return l, nil
}

func (l *sctpListener) Addr() net.Addr { return l.addr }

func (l *sctpListener) Close() error {
	l.closed.Store(true)
	return l.f.Close()
}

// Accept waits for the next association; after Close it returns net.ErrClosed, as a net.Listener does.
func (l *sctpListener) Accept() (net.Conn, error) {
	rc, err := l.f.SyscallConn()
	if err != nil {
		return nil, l.closedOr(err)
	}
	var nfd int
	var aerr error
	err = rc.Read(func(fd uintptr) bool {
		nfd, _, aerr = unix.Accept4(int(fd), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		return !errors.Is(aerr, unix.EAGAIN)
	})
	if err != nil {
		return nil, l.closedOr(err)
	}
	if aerr != nil {
		return nil, l.closedOr(os.NewSyscallError("accept4", aerr))
	}
	return newSCTPConn(nfd), nil
}

func (l *sctpListener) closedOr(err error) error {
	if l.closed.Load() {
		return net.ErrClosed
	}
	return err
}

func newSCTPConn(fd int) *sctpConn {
	c := &sctpConn{local: localAddr(fd)}
	if sa, err := unix.Getpeername(fd); err == nil {
		c.remote = sctpAddr(addrPort(sa))
	}
	c.File = os.NewFile(uintptr(fd), "sctp")
	return c
}

// dialSCTP opens an association to addr (host:port; a name is looked up), from sourcePort when not 0, and
// gives up when ctx ends. ICMP errors are made hard errors (IP_RECVERR): without it the kernel only notes
// an ICMP port unreachable and goes on retransmitting INIT for minutes, where a TCP client is refused at
// once; with it, a port nothing serves is refused as fast as with TCP or connected UDP.
func dialSCTP(ctx context.Context, addr string, sourcePort int) (net.Conn, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("port %q: %w", portStr, err)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		ips, lerr := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		if lerr != nil {
			return nil, lerr
		}
		if len(ips) == 0 {
			return nil, &net.DNSError{Err: "no address", Name: host, IsNotFound: true}
		}
		ip = ips[0]
	}
	ip = ip.Unmap()
	family, recverr := unix.AF_INET, [2]int{unix.IPPROTO_IP, unix.IP_RECVERR}
	if ip.Is6() {
		family, recverr = unix.AF_INET6, [2]int{unix.IPPROTO_IPV6, unix.IPV6_RECVERR}
	}
	fd, err := sctpSocket(family)
	if err != nil {
		return nil, err
	}
	if err := func() error {
		if err := unix.SetsockoptInt(fd, recverr[0], recverr[1], 1); err != nil {
			return err
		}
		if sourcePort != 0 {
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
				return err
			}
			unspecified := netip.IPv4Unspecified()
			if family == unix.AF_INET6 {
				unspecified = netip.IPv6Unspecified()
			}
			if err := unix.Bind(fd, sockaddr(netip.AddrPortFrom(unspecified, uint16(sourcePort)))); err != nil {
				return err
			}
		}
		if err := unix.Connect(fd, sockaddr(netip.AddrPortFrom(ip, uint16(port)))); err != nil && !errors.Is(err, unix.EINPROGRESS) {
			return err
		}
		return nil
	}(); err != nil {
		_ = unix.Close(fd)
		return nil, os.NewSyscallError("sctp connect", err)
	}
	c := newSCTPConn(fd)
	if err := waitConnected(ctx, c); err != nil {
		_ = c.Close()
		return nil, err
	}
	c.local = localAddr(fd)
	if sa, err := unix.Getpeername(fd); err == nil {
		c.remote = sctpAddr(addrPort(sa))
	}
	return c, nil
}

// waitConnected waits for a non-blocking connect to end, as net's dialer does: writable, then SO_ERROR.
func waitConnected(ctx context.Context, c *sctpConn) error {
	if dl, ok := ctx.Deadline(); ok {
		if err := c.SetWriteDeadline(dl); err != nil {
			return err
		}
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetWriteDeadline(time.Unix(1, 0)) })
	defer stop()
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var cerr error
	err = rc.Write(func(fd uintptr) bool {
		v, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			cerr = err
			return true
		}
		switch e := syscall.Errno(v); e {
		case 0:
			// Writable with no error: connected, unless it was never blocked (the first call comes
			// before any wait), which getpeername tells.
			if _, err := unix.Getpeername(int(fd)); err != nil {
				return false
			}
			return true
		case unix.EINPROGRESS, unix.EALREADY, unix.EINTR:
			return false
		default:
			cerr = os.NewSyscallError("sctp connect", e)
			return true
		}
	})
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
	if cerr != nil {
		return cerr
	}
	return c.SetWriteDeadline(time.Time{})
}

func sctpSocket(family int) (int, error) {
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_SCTP)
	if err != nil {
		return -1, os.NewSyscallError("sctp socket", err)
	}
	return fd, nil
}

func sockaddr(ap netip.AddrPort) unix.Sockaddr {
	if ap.Addr().Is4() {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
}

func addrPort(sa unix.Sockaddr) netip.AddrPort {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr).Unmap(), uint16(a.Port))
	}
	return netip.AddrPort{}
}

func localAddr(fd int) net.Addr {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return sctpAddr{}
	}
	return sctpAddr(addrPort(sa))
}
