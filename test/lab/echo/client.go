package echo

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Protocol is what the client speaks to the server.
type Protocol string

// The protocols the client and the server speak.
const (
	ProtocolHTTP Protocol = "http"
	ProtocolTCP  Protocol = "tcp"
	ProtocolUDP  Protocol = "udp"
	// ProtocolSCTP is the line protocol of ProtocolTCP over an SCTP association.
	ProtocolSCTP Protocol = "sctp"
)

// ClientConfig describes a run of requests. Count or Duration bounds the run; with Duration the client loops
// until that much time has passed.
type ClientConfig struct {
	Proto    Protocol
	Addr     string // host:port; for HTTP also a URL or host:port/path
	Count    int
	Interval time.Duration // pause between requests
	Duration time.Duration
	Timeout  time.Duration // per request
	// Hold (TCP and SCTP) opens Count connections, reads the name on each, keeps them all open this long, then
	// closes them: least-connection scheduling sees Count live connections at once.
	Hold time.Duration
	// SourcePort binds a fixed local port (TCP, UDP and SCTP) so that a flow keeps its identity across requests.
	SourcePort int
	// BearerToken (HTTP only) is sent as "Authorization: Bearer <token>", as Prometheus does with its
	// ServiceAccount's token. An https:// address is fetched without verifying the server's certificate:
	// the lab's servers (the agent's metrics port) serve self-signed ones, and what a test checks is who may
	// read, not who serves.
	BearerToken string
	// OnResult, when set, sees each result as soon as it is known (the command prints it at once).
	OnResult func(Result)
}

// Result is the outcome of one request: the answer (a server's name) or a short error reason.
type Result struct {
	Answer string
	Err    string // refused, timeout, reset, eof, unreachable, http-503, ...
}

// String is the output line of one request: "OK <answer>" or "ERR <reason>".
func (r Result) String() string {
	if r.Err != "" {
		return "ERR " + r.Err
	}
	return "OK " + r.Answer
}

// Results are all the outcomes of a run, in order.
type Results []Result

// Summary counts the outcomes: successes, failures, and successes per answer.
func (rs Results) Summary() (ok, failed int, perAnswer map[string]int) {
	perAnswer = map[string]int{}
	for _, r := range rs {
		if r.Err != "" {
			failed++
			continue
		}
		ok++
		perAnswer[r.Answer]++
	}
	return ok, failed, perAnswer
}

// WriteSummary writes "SUMMARY ok=N err=M" and one "COUNT <answer> <n>" line per answer, sorted by answer.
func (rs Results) WriteSummary(w io.Writer) error {
	ok, failed, per := rs.Summary()
	if _, err := fmt.Fprintf(w, "SUMMARY ok=%d err=%d\n", ok, failed); err != nil {
		return err
	}
	answers := make([]string, 0, len(per))
	for a := range per {
		answers = append(answers, a)
	}
	sort.Strings(answers)
	for _, a := range answers {
		if _, err := fmt.Fprintf(w, "COUNT %s %d\n", a, per[a]); err != nil {
			return err
		}
	}
	return nil
}

// Validate reports a configuration the client cannot run (the command exits 2 for it).
func (c ClientConfig) Validate() error {
	switch c.Proto {
	case ProtocolHTTP, ProtocolTCP, ProtocolUDP, ProtocolSCTP:
	default:
		return fmt.Errorf("unknown protocol %q (want http, tcp, udp or sctp)", c.Proto)
	}
	if c.Addr == "" {
		return errors.New("an address is required")
	}
	if c.Count < 1 && c.Duration <= 0 {
		return errors.New("count must be at least 1 (or give a duration)")
	}
	if c.Hold > 0 && c.Proto != ProtocolTCP && c.Proto != ProtocolSCTP {
		return errors.New("hold works with tcp and sctp only")
	}
	if c.BearerToken != "" && c.Proto != ProtocolHTTP {
		return errors.New("a bearer token works with http only")
	}
	if c.Hold > 0 && c.Duration > 0 {
		return errors.New("hold needs a count, not a duration")
	}
	if c.Timeout <= 0 {
		return errors.New("timeout must be positive")
	}
	if c.SourcePort < 0 || c.SourcePort > 65535 {
		return errors.New("source port out of range")
	}
	if c.SourcePort != 0 && c.Proto == ProtocolHTTP {
		return errors.New("source-port works with tcp, udp and sctp only")
	}
	return nil
}

// Client runs the requests and returns every outcome; failures are results, not errors, because a test
// counts them. Requests are sequential: connection refused is reported at once, never retried.
func Client(ctx context.Context, cfg ClientConfig) Results {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	var results Results
	record := func(r Result) {
		results = append(results, r)
		if cfg.OnResult != nil {
			cfg.OnResult(r)
		}
	}
	if cfg.Hold > 0 {
		holdConnections(ctx, cfg, record)
		return results
	}
	var deadline time.Time
	if cfg.Duration > 0 {
		deadline = time.Now().Add(cfg.Duration)
	}
	for i := 0; ; i++ {
		if deadline.IsZero() && i >= cfg.Count {
			break
		}
		if !deadline.IsZero() && !time.Now().Before(deadline) {
			break
		}
		if ctx.Err() != nil {
			break
		}
		if i > 0 && cfg.Interval > 0 && !sleep(ctx, cfg.Interval) {
			break
		}
		record(oneRequest(ctx, cfg))
	}
	return results
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func oneRequest(ctx context.Context, cfg ClientConfig) Result {
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	switch cfg.Proto {
	case ProtocolHTTP:
		return httpRequest(ctx, cfg)
	case ProtocolUDP:
		return udpRequest(ctx, cfg)
	default:
		c, r := tcpConnect(ctx, cfg)
		if c != nil {
			closeConn(c, cfg.SourcePort != 0)
		}
		return r
	}
}

// dialer binds the fixed source port when asked; SO_REUSEADDR lets a closed flow's port be bound again.
func dialer(cfg ClientConfig, network string) *net.Dialer {
	d := &net.Dialer{}
	if cfg.SourcePort == 0 {
		return d
	}
	switch network {
	case "udp":
		d.LocalAddr = &net.UDPAddr{Port: cfg.SourcePort}
	default:
		d.LocalAddr = &net.TCPAddr{Port: cfg.SourcePort}
	}
	d.Control = func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
		})
		if err != nil {
			return err
		}
		return serr
	}
	return d
}

// streamDial opens a TCP connection, or an SCTP association for ProtocolSCTP.
func streamDial(ctx context.Context, cfg ClientConfig) (net.Conn, error) {
	if cfg.Proto == ProtocolSCTP {
		return dialSCTP(ctx, cfg.Addr, cfg.SourcePort)
	}
	return dialer(cfg, "tcp").DialContext(ctx, "tcp", cfg.Addr)
}

// tcpConnect opens a connection (TCP or SCTP), sends a line and reads the name; the open connection is
// returned on success.
func tcpConnect(ctx context.Context, cfg ClientConfig) (net.Conn, Result) {
	c, err := streamDial(ctx, cfg)
	if err != nil {
		return nil, Result{Err: Reason(err)}
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if _, err := io.WriteString(c, "hello\n"); err != nil {
		closeConn(c, cfg.SourcePort != 0)
		return nil, Result{Err: Reason(err)}
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		closeConn(c, cfg.SourcePort != 0)
		return nil, Result{Err: Reason(err)}
	}
	_ = c.SetDeadline(time.Time{})
	return c, Result{Answer: strings.TrimSpace(line)}
}

// closeConn closes a connection; with a fixed source port it resets (TCP) or aborts (SCTP) it instead,
// because a TIME_WAIT on the same 4-tuple would refuse the next connection of the flow.
func closeConn(c net.Conn, abort bool) {
	if lc, ok := c.(interface{ SetLinger(sec int) error }); ok && abort {
		_ = lc.SetLinger(0)
	}
	_ = c.Close()
}

func holdConnections(ctx context.Context, cfg ClientConfig, record func(Result)) {
	var open []net.Conn
	defer func() {
		for _, c := range open {
			closeConn(c, cfg.SourcePort != 0)
		}
	}()
	for i := 0; i < cfg.Count; i++ {
		if i > 0 && cfg.Interval > 0 && !sleep(ctx, cfg.Interval) {
			return
		}
		reqCtx, cancel := context.WithTimeout(ctx, cfg.Timeout)
		c, r := tcpConnect(reqCtx, cfg)
		cancel()
		if c != nil {
			open = append(open, c)
		}
		record(r)
	}
	sleep(ctx, cfg.Hold)
}

func udpRequest(ctx context.Context, cfg ClientConfig) Result {
	// A connected socket, so that an ICMP port unreachable comes back as ECONNREFUSED on the read.
	c, err := dialer(cfg, "udp").DialContext(ctx, "udp", cfg.Addr)
	if err != nil {
		return Result{Err: Reason(err)}
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if _, err := io.WriteString(c, "hello\n"); err != nil {
		return Result{Err: Reason(err)}
	}
	buf := make([]byte, 2048)
	n, err := c.Read(buf)
	if err != nil {
		return Result{Err: Reason(err)}
	}
	return Result{Answer: strings.TrimSpace(string(buf[:n]))}
}

// HTTPURL turns the client's address into a URL: a full URL is kept, host:port[/path] gets http://.
func HTTPURL(addr string) string {
	if strings.HasPrefix(addr, "http://") || strings.HasPrefix(addr, "https://") {
		return addr
	}
	return "http://" + addr
}

var httpClientOnce = sync.OnceValue(func() *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			DisableKeepAlives: true, // each request is a new connection, so IPVS schedules each one
			Proxy:             nil,
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // see ClientConfig.BearerToken
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
})

func httpRequest(ctx context.Context, cfg ClientConfig) Result {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, HTTPURL(cfg.Addr), nil)
	if err != nil {
		return Result{Err: "bad-url"}
	}
	if cfg.BearerToken != "" {
		req.Header.Set("Authorization", "Bearer "+cfg.BearerToken)
	}
	resp, err := httpClientOnce().Do(req)
	if err != nil {
		return Result{Err: Reason(err)}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64*1024))
	if err != nil {
		return Result{Err: Reason(err)}
	}
	if resp.StatusCode != http.StatusOK {
		return Result{Err: fmt.Sprintf("http-%d", resp.StatusCode)}
	}
	return Result{Answer: strings.TrimSpace(string(body))}
}

// Reason is the one-word reason printed after ERR for a network error.
func Reason(err error) string {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "reset"
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "unreachable"
	case errors.Is(err, syscall.EADDRINUSE), errors.Is(err, syscall.EADDRNOTAVAIL):
		return "addr-in-use"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "eof"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	var nerr net.Error
	if errors.As(err, &nerr) && nerr.Timeout() {
		return "timeout"
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return "dns"
	}
	return "error"
}
