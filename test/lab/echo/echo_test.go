package echo

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

// startServer runs an echo server on loopback with ephemeral ports and returns its TCP and UDP addresses.
func startServer(t *testing.T, name string) (tcpAddr, udpAddr string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	bound := make(chan [2]string, 1)
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, Config{Name: name, Host: "127.0.0.1", TCP: []int{0}, UDP: []int{0},
			Listening: func(tcp, udp, _ []net.Addr) { bound <- [2]string{tcp[0].String(), udp[0].String()} }})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	select {
	case a := <-bound:
		return a[0], a[1]
	case err := <-done:
		t.Fatalf("Serve ended early: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("server did not bind")
	}
	return "", ""
}

// closedPort returns a loopback address where nothing listens (TCP and UDP).
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func run(cfg ClientConfig) (Results, string) {
	if cfg.Timeout == 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.Count == 0 && cfg.Duration == 0 {
		cfg.Count = 1
	}
	var out bytes.Buffer
	cfg.OnResult = func(r Result) { out.WriteString(r.String() + "\n") }
	rs := Client(context.Background(), cfg)
	_ = rs.WriteSummary(&out)
	return rs, out.String()
}

func TestClientAgainstServer(t *testing.T) {
	tcpAddr, udpAddr := startServer(t, "pod-a")
	refused := closedPort(t)

	steps := []struct {
		name string
		cfg  ClientConfig
		want string
	}{
		{"http any path", ClientConfig{Proto: ProtocolHTTP, Addr: tcpAddr + "/anything", Count: 2},
			"OK pod-a\nOK pod-a\nSUMMARY ok=2 err=0\nCOUNT pod-a 2\n"},
		{"http full url", ClientConfig{Proto: ProtocolHTTP, Addr: "http://" + tcpAddr + "/"},
			"OK pod-a\nSUMMARY ok=1 err=0\nCOUNT pod-a 1\n"},
		{"readyz while ready", ClientConfig{Proto: ProtocolHTTP, Addr: tcpAddr + "/readyz"},
			"OK ok\nSUMMARY ok=1 err=0\nCOUNT ok 1\n"},
		{"fail readiness", ClientConfig{Proto: ProtocolHTTP, Addr: tcpAddr + "/admin/fail-readiness"},
			"OK readiness failing\nSUMMARY ok=1 err=0\nCOUNT readiness failing 1\n"},
		{"readyz while failing", ClientConfig{Proto: ProtocolHTTP, Addr: tcpAddr + "/readyz"},
			"ERR http-503\nSUMMARY ok=0 err=1\n"},
		{"other paths still served while failing", ClientConfig{Proto: ProtocolHTTP, Addr: tcpAddr},
			"OK pod-a\nSUMMARY ok=1 err=0\nCOUNT pod-a 1\n"},
		{"pass readiness", ClientConfig{Proto: ProtocolHTTP, Addr: tcpAddr + "/admin/pass-readiness"},
			"OK readiness passing\nSUMMARY ok=1 err=0\nCOUNT readiness passing 1\n"},
		{"readyz ready again", ClientConfig{Proto: ProtocolHTTP, Addr: tcpAddr + "/readyz"},
			"OK ok\nSUMMARY ok=1 err=0\nCOUNT ok 1\n"},
		{"tcp line protocol", ClientConfig{Proto: ProtocolTCP, Addr: tcpAddr, Count: 3},
			"OK pod-a\nOK pod-a\nOK pod-a\nSUMMARY ok=3 err=0\nCOUNT pod-a 3\n"},
		{"udp", ClientConfig{Proto: ProtocolUDP, Addr: udpAddr, Count: 2, Interval: 10 * time.Millisecond},
			"OK pod-a\nOK pod-a\nSUMMARY ok=2 err=0\nCOUNT pod-a 2\n"},
		{"udp fixed source port", ClientConfig{Proto: ProtocolUDP, Addr: udpAddr, Count: 2, SourcePort: freeUDPPort(t)},
			"OK pod-a\nOK pod-a\nSUMMARY ok=2 err=0\nCOUNT pod-a 2\n"},
		{"tcp fixed source port", ClientConfig{Proto: ProtocolTCP, Addr: tcpAddr, Count: 2, SourcePort: freeTCPPort(t)},
			"OK pod-a\nOK pod-a\nSUMMARY ok=2 err=0\nCOUNT pod-a 2\n"},
		{"http refused", ClientConfig{Proto: ProtocolHTTP, Addr: refused, Count: 2},
			"ERR refused\nERR refused\nSUMMARY ok=0 err=2\n"},
		{"tcp refused", ClientConfig{Proto: ProtocolTCP, Addr: refused}, "ERR refused\nSUMMARY ok=0 err=1\n"},
		{"udp refused", ClientConfig{Proto: ProtocolUDP, Addr: refused}, "ERR refused\nSUMMARY ok=0 err=1\n"},
	}
	for _, s := range steps { // in order: the readiness steps depend on each other
		start := time.Now()
		_, out := run(s.cfg)
		if out != s.want {
			t.Errorf("%s: output\n%s\nwant\n%s", s.name, out, s.want)
		}
		if strings.Contains(s.name, "refused") && time.Since(start) > time.Second {
			t.Errorf("%s: took %v, refused must be reported at once", s.name, time.Since(start))
		}
	}
}

func freeUDPPort(t *testing.T) int {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

func freeTCPPort(t *testing.T) int {
	addr := closedPort(t)
	_, p, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(p)
	return n
}

func TestClientHoldKeepsConnectionsOpen(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv := Config{Name: "held", Host: "127.0.0.1", TCP: []int{0}}
	bound := make(chan string, 1)
	srv.Listening = func(tcp, _, _ []net.Addr) { bound <- tcp[0].String() }
	done := make(chan struct{})
	go func() { _ = Serve(ctx, srv); close(done) }()
	addr := <-bound

	resultsDone := make(chan Results, 1)
	started := time.Now()
	go func() {
		rs, _ := run(ClientConfig{Proto: ProtocolTCP, Addr: addr, Count: 3, Hold: 600 * time.Millisecond})
		resultsDone <- rs
	}()
	// While the client holds, the kernel shows 3 established connections to the server port.
	time.Sleep(300 * time.Millisecond)
	if n := establishedTo(t, addr); n != 3 {
		t.Errorf("established connections during hold = %d, want 3", n)
	}
	rs := <-resultsDone
	if ok, failed, _ := rs.Summary(); ok != 3 || failed != 0 {
		t.Errorf("hold results ok=%d err=%d, want 3/0", ok, failed)
	}
	if d := time.Since(started); d < 600*time.Millisecond {
		t.Errorf("hold returned after %v, before the hold time", d)
	}
	cancel()
	<-done
}

// establishedTo counts the server-side ESTABLISHED sockets of addr, as the kernel sees them.
func establishedTo(t *testing.T, addr string) int {
	t.Helper()
	_, p, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(p)
	return countEstablished(t, port)
}

func TestClientTimeoutAndDuration(t *testing.T) {
	// A listener that accepts and never answers: the client reports a timeout after its per-request timeout.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	start := time.Now()
	_, out := run(ClientConfig{Proto: ProtocolTCP, Addr: l.Addr().String(), Timeout: 200 * time.Millisecond})
	if out != "ERR timeout\nSUMMARY ok=0 err=1\n" {
		t.Errorf("silent server: %q", out)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("timeout took %v", d)
	}

	tcpAddr, _ := startServer(t, "dur")
	rs, _ := run(ClientConfig{Proto: ProtocolTCP, Addr: tcpAddr, Duration: 300 * time.Millisecond, Interval: 50 * time.Millisecond})
	if ok, _, _ := rs.Summary(); ok < 3 || ok > 8 {
		t.Errorf("duration run made %d requests, want about 6", ok)
	}
}

func TestValidate(t *testing.T) {
	base := ClientConfig{Proto: ProtocolHTTP, Addr: "x:1", Count: 1, Timeout: time.Second}
	cases := []struct {
		name   string
		mutate func(*ClientConfig)
		ok     bool
	}{
		{"valid", func(*ClientConfig) {}, true},
		{"bad proto", func(c *ClientConfig) { c.Proto = "quic" }, false},
		{"sctp", func(c *ClientConfig) { c.Proto = ProtocolSCTP }, true},
		{"no addr", func(c *ClientConfig) { c.Addr = "" }, false},
		{"zero count", func(c *ClientConfig) { c.Count = 0 }, false},
		{"duration instead of count", func(c *ClientConfig) { c.Count = 0; c.Duration = time.Second }, true},
		{"hold needs tcp", func(c *ClientConfig) { c.Hold = time.Second }, false},
		{"hold tcp", func(c *ClientConfig) { c.Proto = ProtocolTCP; c.Hold = time.Second }, true},
		{"hold sctp", func(c *ClientConfig) { c.Proto = ProtocolSCTP; c.Hold = time.Second }, true},
		{"hold udp", func(c *ClientConfig) { c.Proto = ProtocolUDP; c.Hold = time.Second }, false},
		{"source port on http", func(c *ClientConfig) { c.SourcePort = 4000 }, false},
		{"source port on udp", func(c *ClientConfig) { c.Proto = ProtocolUDP; c.SourcePort = 4000 }, true},
		{"bearer token on http", func(c *ClientConfig) { c.BearerToken = "t" }, true},
		{"bearer token needs http", func(c *ClientConfig) { c.Proto = ProtocolTCP; c.BearerToken = "t" }, false},
	}
	for _, c := range cases {
		cfg := base
		c.mutate(&cfg)
		if err := cfg.Validate(); (err == nil) != c.ok {
			t.Errorf("%s: Validate() = %v", c.name, err)
		}
	}
}

// TestClientBearerTokenOverHTTPS: the client reads an authenticated HTTPS endpoint with a self-signed
// certificate, as the lab reads the agent's metrics port.
func TestClientBearerTokenOverHTTPS(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer s3cret" {
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		_, _ = w.Write([]byte("metrics\n"))
	}))
	defer srv.Close()
	for _, c := range []struct {
		token, want string
	}{
		{"", "ERR http-401\nSUMMARY ok=0 err=1\n"},
		{"wrong", "ERR http-401\nSUMMARY ok=0 err=1\n"},
		{"s3cret", "OK metrics\nSUMMARY ok=1 err=0\nCOUNT metrics 1\n"},
	} {
		_, out := run(ClientConfig{Proto: ProtocolHTTP, Addr: srv.URL + "/metrics", BearerToken: c.token})
		if out != c.want {
			t.Errorf("token %q: output\n%s\nwant\n%s", c.token, out, c.want)
		}
	}
}

func TestIsHTTPRequestLine(t *testing.T) {
	cases := map[string]bool{
		"GET / HTTP/1.1":          true,
		"HEAD /readyz HTTP/1.0":   true,
		"POST /x?y=1 HTTP/1.1":    true,
		"hello":                   false,
		"GET /":                   false,
		"get / HTTP/1.1":          false,
		"GET / HTTP/2":            false,
		"FETCH / HTTP/1.1":        false,
		"GET http://a/b HTTP/1.1": true,
	}
	for line, want := range cases {
		if _, _, got := isHTTPRequestLine(line); got != want {
			t.Errorf("isHTTPRequestLine(%q) = %v, want %v", line, got, want)
		}
	}
}

// TestServeShutdownDelay: once Shutdown closes the server still answers (the kubelet's SIGTERM comes while the
// endpoint is still in rotation), stops by itself after ShutdownDelay, and ctx ending cuts the delay short.
func TestServeShutdownDelay(t *testing.T) {
	for _, tc := range []struct {
		name      string
		delay     time.Duration
		cancelAt  time.Duration // cancel ctx this long after Shutdown closes; 0: never
		wantStop  time.Duration // Serve returns no earlier than this after Shutdown closes
		wantAfter bool          // a request 100 ms after Shutdown closes is answered
	}{
		{name: "answers during the delay, then stops", delay: 600 * time.Millisecond, wantStop: 600 * time.Millisecond, wantAfter: true},
		{name: "no delay stops at once", delay: 0, wantAfter: false},
		{name: "ctx cuts the delay short", delay: time.Minute, cancelAt: 300 * time.Millisecond, wantStop: 300 * time.Millisecond, wantAfter: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			shutdown := make(chan struct{})
			bound := make(chan string, 1)
			done := make(chan error, 1)
			go func() {
				done <- Serve(ctx, Config{Name: "draining", Host: "127.0.0.1", TCP: []int{0},
					Shutdown: shutdown, ShutdownDelay: tc.delay,
					Listening: func(tcp, _, _ []net.Addr) { bound <- tcp[0].String() }})
			}()
			addr := <-bound
			if got, _ := run(ClientConfig{Proto: ProtocolHTTP, Addr: addr}); got[0].Answer != "draining" {
				t.Fatalf("before shutdown: %v", got)
			}
			t0 := time.Now()
			close(shutdown)
			if tc.cancelAt > 0 {
				time.AfterFunc(tc.cancelAt, cancel)
			}
			time.Sleep(100 * time.Millisecond)
			got, _ := run(ClientConfig{Proto: ProtocolHTTP, Addr: addr, Timeout: time.Second})
			if answered := got[0].Err == ""; answered != tc.wantAfter {
				t.Errorf("100 ms after shutdown: %v, want answered=%v", got, tc.wantAfter)
			}
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Serve did not stop")
			}
			if took := time.Since(t0); took < tc.wantStop || took > tc.wantStop+2*time.Second {
				t.Errorf("stopped %v after shutdown, want about %v", took, tc.wantStop)
			}
			if got, _ := run(ClientConfig{Proto: ProtocolHTTP, Addr: addr, Timeout: time.Second}); got[0].Err == "" {
				t.Errorf("answered after stopping: %v", got)
			}
		})
	}
}

// A pod stops listening on one port and stays Ready on another, then listens again: what the health check
// scenarios need (readiness alone cannot see it).
func TestServeClosesAndReopensAPort(t *testing.T) {
	admin, other := freeTCPPort(t), freeTCPPort(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	bound := make(chan struct{})
	go func() {
		done <- Serve(ctx, Config{Name: "pod-a", Host: "127.0.0.1", TCP: []int{admin, other},
			Listening: func(_, _, _ []net.Addr) { close(bound) }})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	<-bound
	adminAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(admin))
	otherAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(other))
	for _, s := range []struct{ name, addr, want string }{
		{"served", otherAddr, "OK pod-a\nSUMMARY ok=1 err=0\nCOUNT pod-a 1\n"},
		{"close it", adminAddr + "/admin/close-port/" + strconv.Itoa(other), fmt.Sprintf("OK closed %d\nSUMMARY ok=1 err=0\nCOUNT closed %d 1\n", other, other)},
		{"refused", otherAddr, "ERR refused\nSUMMARY ok=0 err=1\n"},
		{"still ready", adminAddr + "/readyz", "OK ok\nSUMMARY ok=1 err=0\nCOUNT ok 1\n"},
		{"open it", adminAddr + "/admin/open-port/" + strconv.Itoa(other), fmt.Sprintf("OK listening on %d\nSUMMARY ok=1 err=0\nCOUNT listening on %d 1\n", other, other)},
		{"served again", otherAddr, "OK pod-a\nSUMMARY ok=1 err=0\nCOUNT pod-a 1\n"},
	} {
		if _, out := run(ClientConfig{Proto: ProtocolHTTP, Addr: s.addr}); out != s.want {
			t.Errorf("%s: output\n%s\nwant\n%s", s.name, out, s.want)
		}
	}
}
