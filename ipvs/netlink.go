//go:build linux

package ipvs

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"time"

	mobyipvs "github.com/moby/ipvs"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Kernel values moby/ipvs passes through untouched.
const (
	svcFlagPersistent = 0x1        // IP_VS_SVC_F_PERSISTENT
	netmaskV4         = 0xffffffff // persistence granularity: one client address
	netmaskV6         = 128        // the kernel refuses an IPv6 service whose netmask is not 1..128
)

// netlinkIPVS implements Interface over a small pool of reused moby/ipvs handles (each its own generic
// netlink socket).
type netlinkIPVS struct {
	// handles holds the idle handles; a call takes one for its duration. One handle cannot serve two calls
	// at once (moby's handle reads replies off its socket and drops those whose sequence number is not its
	// own, so two concurrent calls would steal each other's answers), and with a single one every worker of
	// the agent queued on its mutex: at 10,000 Services the IPVS calls of the cold start cost twice the raw
	// loop's CPU for the same calls, in futex waits and the scheduler. The kernel serves several sockets
	// in parallel (two goroutines with two handles: +42% in the lab VM).
	handles chan *mobyipvs.Handle
	all     []*mobyipvs.Handle
	// dump serves Services, the one dump of the whole table, on a socket of its own (dumpMu serialises
	// it), so that a Service's changes do not wait behind it: at 10,000 virtual servers it is the longest
	// call the agent makes. The kernel interleaves both sockets' requests.
	dumpMu sync.Mutex
	dump   *mobyipvs.Handle
	// table is /proc/net/ip_vs of the handle's network namespace, opened once (an open file stays bound
	// to the namespace it was opened in) and read again from the start by AllDestinations, under dumpMu.
	// nil: it could not be opened, and AllDestinations fails with ErrNotSupported.
	table *os.File
	// family is the IPVS generic netlink family's id, and batch the sockets Batch sends on
	// (netlink_batch.go): moby/ipvs sends one request per call.
	family   uint16
	batch    chan *nl.SocketHandle
	batchAll []*nl.SocketHandle
}

// DefaultHandles is how many netlink sockets NewNetlink opens for changes and single reads: more than the
// VM's or a node's typical cores gain nothing, since each call is a synchronous system call.
const DefaultHandles = 4

var _ DestinationDumper = (*netlinkIPVS)(nil)

// NewNetlink returns an Interface to the IPVS table of the caller's network namespace. The value also
// implements io.Closer.
//
// Load the ip_vs modules first (host.LoadModules): moby/ipvs resolves the IPVS generic netlink family once
// per process, and if that happens before ip_vs is loaded every later call silently does nothing. NewNetlink
// refuses to start when the family is missing; host.Probe proves the handle really works.
func NewNetlink() (Interface, error) { return NewNetlinkInNamespace("") }

// NewNetlinkInNamespace is NewNetlink for the network namespace at path (e.g. /var/run/netns/NAME or
// /proc/PID/ns/net); "" means the caller's.
func NewNetlinkInNamespace(path string) (Interface, error) {
	return NewNetlinkHandles(path, DefaultHandles)
}

// NewNetlinkHandles is NewNetlinkInNamespace with n sockets for changes and single reads (n < 1 means 1),
// so that up to n calls run at once.
func NewNetlinkHandles(path string, n int) (Interface, error) {
	// Generic netlink families are global, so this check is valid from any namespace.
	nh, err := netlink.NewHandle(unix.NETLINK_GENERIC)
	if err != nil {
		return nil, fmt.Errorf("ipvs: open generic netlink: %w", err)
	}
	fam, err := nh.GenlFamilyGet("IPVS")
	nh.Close()
	if err != nil {
		return nil, fmt.Errorf("%w: generic netlink family IPVS not registered (load the ip_vs module): %w", ErrNotSupported, err)
	}
	n = max(n, 1)
	out := &netlinkIPVS{handles: make(chan *mobyipvs.Handle, n), family: fam.ID, batch: make(chan *nl.SocketHandle, n)}
	if out.batchAll, err = openBatchSockets(path, n); err != nil {
		return nil, fmt.Errorf("ipvs: open generic netlink: %w", err)
	}
	for _, s := range out.batchAll {
		out.batch <- s
	}
	for range n + 1 {
		h, err := mobyipvs.New(path)
		if err != nil {
			for _, h := range out.all {
				h.Close()
			}
			for _, s := range out.batchAll {
				s.Socket.Close()
			}
			return nil, fmt.Errorf("ipvs: open handle: %w", err)
		}
		out.all = append(out.all, h)
	}
	out.dump = out.all[n]
	out.all = out.all[:n]
	for _, h := range out.all {
		out.handles <- h
	}
	// Without the table file the caller reads each virtual server's real servers: slower, never wrong.
	out.table, _ = openProcTable(path)
	return out, nil
}

// with runs f on an idle handle, waiting for one if all are busy.
func (n *netlinkIPVS) with(f func(h *mobyipvs.Handle) error) error {
	h := <-n.handles
	defer func() { n.handles <- h }()
	return f(h)
}

// Close releases the netlink sockets, once the calls under way have returned their handles.
func (n *netlinkIPVS) Close() error {
	for range n.all {
		(<-n.handles).Close()
	}
	for range n.batchAll {
		(<-n.batch).Socket.Close()
	}
	n.dumpMu.Lock()
	defer n.dumpMu.Unlock()
	n.dump.Close()
	if n.table != nil {
		return n.table.Close()
	}
	return nil
}

// AllDestinations reads the real servers of every virtual server at once, from /proc/net/ip_vs: one read
// of the whole table instead of a netlink dump per virtual server. Equivalent to: `cat /proc/net/ip_vs`.
func (n *netlinkIPVS) AllDestinations() (map[ServiceKey][]ObservedDestination, error) {
	n.dumpMu.Lock()
	defer n.dumpMu.Unlock()
	if n.table == nil {
		return nil, &Error{Op: OpDestinations, Object: procTable, Err: ErrNotSupported}
	}
	if _, err := n.table.Seek(0, io.SeekStart); err != nil {
		return nil, &Error{Op: OpDestinations, Object: procTable, Err: err}
	}
	// A large buffer: every read of the file makes the kernel walk the table from the start to where the
	// last one ended.
	out, err := ParseProcTable(bufio.NewReaderSize(n.table, 1<<20))
	if err != nil {
		return nil, &Error{Op: OpDestinations, Object: procTable, Err: err}
	}
	return out, nil
}

const procTable = "/proc/net/ip_vs"

// openProcTable opens /proc/net/ip_vs in the network namespace at path ("": the process's). For another
// namespace it switches one locked OS thread there for the open; a thread that cannot be switched back
// stays locked and ends with its goroutine.
func openProcTable(path string) (*os.File, error) {
	if path == "" {
		return os.Open("/proc/self/net/ip_vs")
	}
	type result struct {
		f   *os.File
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		f, err := func() (*os.File, error) {
			orig, err := netns.Get()
			if err != nil {
				return nil, err
			}
			defer orig.Close()
			target, err := netns.GetFromPath(path)
			if err != nil {
				return nil, err
			}
			defer target.Close()
			if err := netns.Set(target); err != nil {
				return nil, err
			}
			f, openErr := os.Open("/proc/thread-self/net/ip_vs")
			if err := netns.Set(orig); err != nil {
				if f != nil {
					f.Close()
				}
				return nil, err // the thread stays locked in the wrong namespace and ends with this goroutine
			}
			runtime.UnlockOSThread()
			return f, openErr
		}()
		done <- result{f, err}
	}()
	r := <-done
	return r.f, r.err
}

// Services lists every virtual server except firewall-mark ones, which this library does not model.
// Equivalent to: `ipvsadm -Ln` (services only).
func (n *netlinkIPVS) Services() ([]Service, error) {
	n.dumpMu.Lock()
	svcs, err := n.dump.GetServices()
	n.dumpMu.Unlock()
	if err != nil {
		return nil, &Error{Op: OpServices, Err: err}
	}
	out := make([]Service, 0, len(svcs))
	for _, s := range svcs {
		if s.FWMark != 0 {
			continue
		}
		svc, err := fromMobyService(s)
		if err != nil {
			return nil, &Error{Op: OpServices, Err: err}
		}
		out = append(out, svc)
	}
	return out, nil
}

// Service reads one virtual server (a GET, not a dump): the kernel answers ESRCH, which matches
// ErrNotFound, when it does not exist.
// Equivalent to: `ipvsadm -Ln -t VIP:PORT` (the service line only).
func (n *netlinkIPVS) Service(k ServiceKey) (Service, error) {
	ms, err := toMobyService(Service{ServiceKey: k})
	if err != nil {
		return Service{}, &Error{Op: OpService, Object: k.String(), Err: err}
	}
	var got *mobyipvs.Service
	err = n.with(func(h *mobyipvs.Handle) error {
		got, err = h.GetService(ms)
		return err
	})
	if err != nil {
		return Service{}, &Error{Op: OpService, Object: k.String(), Err: err}
	}
	svc, err := fromMobyService(got)
	if err != nil {
		return Service{}, &Error{Op: OpService, Object: k.String(), Err: err}
	}
	return svc, nil
}

// AddService creates a virtual server. Equivalent to: `ipvsadm -A -t VIP:PORT -s SCHED [-p SECONDS]`.
func (n *netlinkIPVS) AddService(s Service) error {
	return n.serviceCmd(OpAddService, s, (*mobyipvs.Handle).NewService)
}

// UpdateService changes a virtual server's scheduler or persistence in place.
// Equivalent to: `ipvsadm -E -t VIP:PORT -s SCHED [-p SECONDS]`.
func (n *netlinkIPVS) UpdateService(s Service) error {
	return n.serviceCmd(OpUpdateService, s, (*mobyipvs.Handle).UpdateService)
}

// DeleteService removes a virtual server and its real servers. Equivalent to: `ipvsadm -D -t VIP:PORT`.
func (n *netlinkIPVS) DeleteService(k ServiceKey) error {
	return n.serviceCmd(OpDeleteService, Service{ServiceKey: k}, (*mobyipvs.Handle).DelService)
}

func (n *netlinkIPVS) serviceCmd(op string, s Service, cmd func(*mobyipvs.Handle, *mobyipvs.Service) error) error {
	ms, err := toMobyService(s)
	if err != nil {
		return &Error{Op: op, Object: s.ServiceKey.String(), Err: err}
	}
	err = n.with(func(h *mobyipvs.Handle) error { return cmd(h, ms) })
	if err != nil {
		return &Error{Op: op, Object: s.ServiceKey.String(), Err: err}
	}
	return nil
}

// Destinations lists a virtual server's real servers with their connection counts.
// Equivalent to: `ipvsadm -Ln -t VIP:PORT`.
func (n *netlinkIPVS) Destinations(k ServiceKey) ([]ObservedDestination, error) {
	ms, err := toMobyService(Service{ServiceKey: k})
	if err != nil {
		return nil, &Error{Op: OpDestinations, Object: k.String(), Err: err}
	}
	var dsts []*mobyipvs.Destination
	err = n.with(func(h *mobyipvs.Handle) error {
		var err error
		if dsts, err = h.GetDestinations(ms); err != nil || len(dsts) > 0 {
			return err
		}
		// The kernel answers a dump for a missing virtual server with an empty list, not ESRCH; one more
		// round trip (only for empty lists) tells "no real servers" from "no such virtual server".
		if _, err := h.GetService(ms); errors.Is(err, unix.ESRCH) {
			return err
		}
		return nil
	})
	if err != nil {
		return nil, &Error{Op: OpDestinations, Object: k.String(), Err: err}
	}
	if len(dsts) == 0 {
		return nil, nil
	}
	out := make([]ObservedDestination, 0, len(dsts))
	for _, d := range dsts {
		addr, ok := netip.AddrFromSlice(d.Address)
		if !ok {
			return nil, &Error{Op: OpDestinations, Object: k.String(), Err: fmt.Errorf("bad real server address %v", d.Address)}
		}
		out = append(out, ObservedDestination{
			Destination: Destination{
				DestinationKey: DestinationKey{Address: addr.Unmap(), Port: d.Port},
				Weight:         d.Weight,
			},
			DestinationStats: DestinationStats{
				ActiveConnections:   d.ActiveConnections,
				InactiveConnections: d.InactiveConnections,
			},
		})
	}
	return out, nil
}

// AddDestination adds a masquerading real server.
// Equivalent to: `ipvsadm -a -t VIP:PORT -r IP:PORT -m -w WEIGHT`.
func (n *netlinkIPVS) AddDestination(k ServiceKey, d Destination) error {
	return n.destinationCmd(OpAddDestination, k, d, (*mobyipvs.Handle).NewDestination)
}

// UpdateDestination changes a real server's weight.
// Equivalent to: `ipvsadm -e -t VIP:PORT -r IP:PORT -m -w WEIGHT`.
func (n *netlinkIPVS) UpdateDestination(k ServiceKey, d Destination) error {
	return n.destinationCmd(OpUpdateDestination, k, d, (*mobyipvs.Handle).UpdateDestination)
}

// DeleteDestination removes a real server. Equivalent to: `ipvsadm -d -t VIP:PORT -r IP:PORT`.
func (n *netlinkIPVS) DeleteDestination(k ServiceKey, dk DestinationKey) error {
	return n.destinationCmd(OpDeleteDestination, k, Destination{DestinationKey: dk}, (*mobyipvs.Handle).DelDestination)
}

func (n *netlinkIPVS) destinationCmd(op string, k ServiceKey, d Destination, cmd func(*mobyipvs.Handle, *mobyipvs.Service, *mobyipvs.Destination) error) error {
	obj := k.String() + " -r " + d.DestinationKey.String()
	ms, err := toMobyService(Service{ServiceKey: k})
	if err != nil {
		return &Error{Op: op, Object: obj, Err: err}
	}
	if err := checkAddr(d.Address); err != nil {
		return &Error{Op: op, Object: obj, Err: err}
	}
	md := &mobyipvs.Destination{
		Address:         net.IP(d.Address.AsSlice()),
		Port:            d.Port,
		Weight:          d.Weight,
		ConnectionFlags: mobyipvs.ConnFwdMasq,
		AddressFamily:   family(d.Address),
	}
	err = n.with(func(h *mobyipvs.Handle) error { return cmd(h, ms, md) })
	if err != nil {
		return &Error{Op: op, Object: obj, Err: err}
	}
	return nil
}

// toMobyService converts a Service; the key alone is enough for delete and destination verbs.
func toMobyService(s Service) (*mobyipvs.Service, error) {
	if err := checkAddr(s.Address); err != nil {
		return nil, err
	}
	ms := &mobyipvs.Service{
		Address:       net.IP(s.Address.AsSlice()),
		Protocol:      uint16(s.Protocol),
		Port:          s.Port,
		SchedName:     s.Scheduler,
		AddressFamily: family(s.Address),
		Netmask:       netmaskV4,
	}
	if s.Address.Is6() {
		ms.Netmask = netmaskV6
	}
	if secs := persistenceSeconds(s.Persistence); secs > 0 {
		ms.Flags = svcFlagPersistent
		ms.Timeout = secs
	}
	return ms, nil
}

func fromMobyService(s *mobyipvs.Service) (Service, error) {
	addr, ok := netip.AddrFromSlice(s.Address)
	if !ok {
		return Service{}, fmt.Errorf("bad virtual server address %v", s.Address)
	}
	svc := Service{
		ServiceKey: ServiceKey{Address: addr.Unmap(), Port: s.Port, Protocol: Protocol(s.Protocol)},
		Scheduler:  s.SchedName,
	}
	// The kernel also reports internal flags (IP_VS_SVC_F_HASHED), so test the one bit that matters.
	if s.Flags&svcFlagPersistent != 0 {
		svc.Persistence = time.Duration(s.Timeout) * time.Second
	}
	return svc, nil
}

func checkAddr(a netip.Addr) error {
	if !a.IsValid() || a.Is4In6() || a.Zone() != "" {
		return fmt.Errorf("invalid address %q: %w", a, unix.EINVAL)
	}
	return nil
}

func family(a netip.Addr) uint16 {
	if a.Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}
