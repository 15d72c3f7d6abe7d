package labd

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// listen serves each accepted connection with handle on 127.0.0.1 and returns its address.
func listen(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return ln.Addr().String()
}

// closedPort is a local address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// The daemon tunnels CONNECT requests, as kube-apiserver's egress selector sends them, to the named
// address: an HTTP exchange, a server that speaks first, and a client that half-closes all get through.
func TestDaemonConnectTunnels(t *testing.T) {
	daemon := strings.TrimPrefix(newServer(t).URL, "http://")
	web := strings.TrimPrefix(httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "pod answers "+r.URL.Path)
	})).URL, "http://")
	banner := listen(t, func(c net.Conn) { _, _ = io.WriteString(c, "banner\n") })
	// pong answers only once the client has finished sending (half close), as a request-response protocol may.
	pong := listen(t, func(c net.Conn) {
		in, _ := io.ReadAll(c)
		_, _ = io.WriteString(c, "got "+string(in))
	})

	tests := []struct {
		name    string
		address string
		talk    func(t *testing.T, c net.Conn) string
		want    string
	}{
		{"HTTP through the tunnel", web, func(t *testing.T, c net.Conn) string {
			req, _ := http.NewRequest(http.MethodGet, "http://"+web+"/healthz", nil)
			if err := req.Write(c); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return string(b)
		}, "pod answers /healthz"},
		{"the target speaks first", banner, func(t *testing.T, c net.Conn) string {
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			return line
		}, "banner\n"},
		{"a half close reaches the target and the answer comes back", pong, func(t *testing.T, c net.Conn) string {
			_, _ = io.WriteString(c, "ping")
			if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(c)
			return string(b)
		}, "got ping"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := DialConnect(ctx, daemon, tt.address)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			if got := tt.talk(t, c); got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// What the proxy refuses, it refuses with a status that says why, and DialConnect reports it.
func TestConnectRefusals(t *testing.T) {
	daemon := strings.TrimPrefix(newServer(t).URL, "http://")
	for _, tt := range []struct {
		name    string
		address string
		want    string
	}{
		{"nothing listens", closedPort(t), "502 Bad Gateway"},
		{"no port", "127.0.0.1", "400 Bad Request"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := DialConnect(ctx, daemon, tt.address)
			if err == nil {
				c.Close()
				t.Fatal("connected")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not say %q", err, tt.want)
			}
		})
	}
	// Only CONNECT: a plain GET to the proxy is no tunnel.
	srv := httptest.NewServer(ConnectProxy{Dial: func(context.Context, string) (net.Conn, error) {
		t.Error("dialled for a GET")
		return nil, io.EOF
	}})
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET: %s, want 405", resp.Status)
	}
}
