// Package echo is the lab's test workload: a server that answers every TCP or SCTP line, HTTP request and UDP
// datagram with its own name (so a client can tell which backend IPVS chose), and a client that sends such requests and
// prints one parseable line per answer.
package echo

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
)

// DefaultShutdownDelay is how long `labvm echo` goes on answering after SIGTERM. A real kubelet sends SIGTERM
// as soon as a pod is deleted, while the EndpointSlice controller marks the endpoint terminating and the
// agents take its real server out of rotation (weight 0) at the same time, not before: a server that stopped
// at once would refuse the connections still scheduled to it in that window (Kubernetes' docs, "Termination
// of Pods"). Kubernetes' own e2e images keep serving for a while after SIGTERM for the same reason (agnhost
// netexec --delay-shutdown). Assumption: 3 s covers the EndpointSlice update plus the agents' programming on a
// laptop's kind cluster (normally well under a second); the scenarios' pods allow 5 s of grace
// (test/dataplane.echoPodSpec) so that the kubelet does not SIGKILL the server before the delay ends.
const DefaultShutdownDelay = 3 * time.Second

// Config says what the echo server answers and where.
type Config struct {
	// Name is the answer to every request; DefaultName() when empty.
	Name string
	// TCP and UDP are the ports to listen on (all addresses).
	TCP, UDP []int
	// SCTP are ports served as TCP ones are (line protocol or HTTP), over SCTP associations.
	SCTP []int
	// Host is the address to bind; empty means all addresses. Tests use 127.0.0.1.
	Host string
	// Ready is the initial readiness served by GET /readyz; nil means ready.
	Ready *bool
	// Listening, when set, is called once every socket is bound, with their actual addresses (useful with port 0).
	Listening func(tcp, udp, sctp []net.Addr)
	// Shutdown, when set, asks for a graceful stop when it is closed (the program closes it on SIGTERM): the
	// server goes on answering everything, /readyz included, for ShutdownDelay, then stops as if ctx were
	// done. ctx ending stops the server at once, during the delay too.
	Shutdown <-chan struct{}
	// ShutdownDelay is how long the server answers after Shutdown closes (DefaultShutdownDelay in labvm).
	ShutdownDelay time.Duration
}

// DefaultName is what a server answers when no name is configured, as in a kind pod: $POD_NAME, then the
// hostname.
func DefaultName() string {
	if n := os.Getenv("POD_NAME"); n != "" {
		return n
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return "echo"
}

// readiness is the in-process state behind /readyz, flipped by the /admin endpoints, and the TCP ports that
// /admin/close-port/N and /admin/open-port/N stop and start listening on.
type readiness struct {
	failing atomic.Bool
	ports   *portSwitch
}

// portSwitch holds the TCP listeners by configured port, so that a scenario can make a pod stop listening on
// one port (connections to it are refused, as by a hung or crashed server process) while it stays Ready on
// another: what a health check must notice and readiness does not.
type portSwitch struct {
	mu        sync.Mutex
	listeners map[int]net.Listener
	listen    func(port int) (net.Listener, error)
	serve     func(net.Listener)
	stopped   bool
}

// close stops listening on port; it reports whether the port was open.
func (p *portSwitch) close(port int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	l, ok := p.listeners[port]
	if ok {
		_ = l.Close()
		delete(p.listeners, port)
	}
	return ok
}

// open listens on port again; it reports whether it now listens.
func (p *portSwitch) open(port int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.listeners[port]; ok {
		return true
	}
	if p.stopped || p.listen == nil {
		return false
	}
	l, err := p.listen(port)
	if err != nil {
		return false
	}
	p.listeners[port] = l
	p.serve(l)
	return true
}

func (p *portSwitch) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopped = true
	for port, l := range p.listeners {
		_ = l.Close()
		delete(p.listeners, port)
	}
}

// Serve listens on every configured port and answers until ctx is done. It fails at once if a port cannot be
// bound; once serving, a broken connection never stops the server. With no ports it just waits for ctx, which
// makes it a harmless process for client-only pods.
func Serve(ctx context.Context, cfg Config) error {
	if cfg.Name == "" {
		cfg.Name = DefaultName()
	}
	log := logr.FromContextOrDiscard(ctx).WithValues("name", cfg.Name)
	state := &readiness{ports: &portSwitch{listeners: map[int]net.Listener{}}}
	if cfg.Ready != nil && !*cfg.Ready {
		state.failing.Store(true)
	}

	var tcpListeners, sctpListeners []net.Listener
	var udpConns []net.PacketConn
	closeAll := func() {
		for _, l := range tcpListeners {
			_ = l.Close()
		}
		for _, l := range sctpListeners {
			_ = l.Close()
		}
		state.ports.closeAll()
		for _, c := range udpConns {
			_ = c.Close()
		}
	}
	var lc net.ListenConfig
	for _, port := range cfg.TCP {
		l, err := lc.Listen(ctx, "tcp", net.JoinHostPort(cfg.Host, strconv.Itoa(port)))
		if err != nil {
			closeAll()
			return fmt.Errorf("listening on tcp port %d: %w", port, err)
		}
		tcpListeners = append(tcpListeners, l)
	}
	for _, port := range cfg.UDP {
		c, err := lc.ListenPacket(ctx, "udp", net.JoinHostPort(cfg.Host, strconv.Itoa(port)))
		if err != nil {
			closeAll()
			return fmt.Errorf("listening on udp port %d: %w", port, err)
		}
		udpConns = append(udpConns, c)
	}
	for _, port := range cfg.SCTP {
		l, err := listenSCTP(cfg.Host, port)
		if err != nil {
			closeAll()
			return fmt.Errorf("listening on sctp port %d: %w", port, err)
		}
		sctpListeners = append(sctpListeners, l)
	}
	if cfg.Listening != nil {
		var tcpAddrs, udpAddrs, sctpAddrs []net.Addr
		for _, l := range tcpListeners {
			tcpAddrs = append(tcpAddrs, l.Addr())
		}
		for _, c := range udpConns {
			udpAddrs = append(udpAddrs, c.LocalAddr())
		}
		for _, l := range sctpListeners {
			sctpAddrs = append(sctpAddrs, l.Addr())
		}
		cfg.Listening(tcpAddrs, udpAddrs, sctpAddrs)
	}
	log.Info("Echo server listening", "tcp", cfg.TCP, "udp", cfg.UDP, "sctp", cfg.SCTP)

	var wg sync.WaitGroup
	conns := &connSet{m: map[net.Conn]struct{}{}}
	serve := func(l net.Listener) { wg.Go(func() { serveTCP(l, cfg.Name, state, conns, log) }) }
	state.ports.mu.Lock()
	for i, l := range tcpListeners {
		state.ports.listeners[cfg.TCP[i]] = l
		serve(l)
	}
	state.ports.listen = func(port int) (net.Listener, error) {
		return lc.Listen(ctx, "tcp", net.JoinHostPort(cfg.Host, strconv.Itoa(port)))
	}
	state.ports.serve = serve
	tcpListeners = nil // the switch owns them now
	state.ports.mu.Unlock()
	for _, l := range sctpListeners {
		wg.Go(func() { serveTCP(l, cfg.Name, state, conns, log) })
	}
	for _, c := range udpConns {
		wg.Go(func() { serveUDP(c, cfg.Name, log) })
	}
	waitForStop(ctx, cfg, log)
	closeAll()
	conns.closeAll()
	wg.Wait()
	log.Info("Echo server stopped")
	return nil
}

// waitForStop returns when ctx is done, or ShutdownDelay after Shutdown closes, whichever comes first.
func waitForStop(ctx context.Context, cfg Config, log logr.Logger) {
	select {
	case <-ctx.Done():
		return
	case <-cfg.Shutdown: // a nil channel never closes
	}
	log.Info("Shutdown requested; answering until the delay ends", "delay", cfg.ShutdownDelay.String())
	t := time.NewTimer(cfg.ShutdownDelay)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// connSet tracks open TCP and SCTP connections so that shutdown closes held (line protocol) connections too.
type connSet struct {
	mu     sync.Mutex
	m      map[net.Conn]struct{}
	closed bool
}

func (s *connSet) add(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.m[c] = struct{}{}
	return true
}

func (s *connSet) remove(c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, c)
}

func (s *connSet) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for c := range s.m {
		_ = c.Close()
	}
}

func serveTCP(l net.Listener, name string, state *readiness, conns *connSet, log logr.Logger) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			log.Error(err, "Accepting a TCP connection", "addr", l.Addr().String())
			continue
		}
		if !conns.add(c) {
			_ = c.Close()
			return
		}
		wg.Go(func() {
			defer conns.remove(c)
			defer c.Close()
			handleTCPConn(c, name, state)
		})
	}
}

func serveUDP(c net.PacketConn, name string, log logr.Logger) {
	buf := make([]byte, 64*1024)
	answer := []byte(name + "\n")
	for {
		_, from, err := c.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// ICMP errors from earlier replies surface here on some kernels; they concern one peer only.
			continue
		}
		if _, err := c.WriteTo(answer, from); err != nil {
			log.V(1).Info("Answering a UDP datagram failed", "peer", from.String(), "err", err.Error())
		}
	}
}
