package labd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// ConnectProxy is an HTTP CONNECT proxy (RFC 9110, 9.3.6): for each CONNECT request it opens a TCP
// connection to the request's host:port with Dial, answers 200 and then copies bytes both ways until both
// sides are done. It is the shape kube-apiserver's egress selector speaks (HTTPConnect): labd serves it so
// that the host's API server reaches pods inside the VM (pods/proxy, services/proxy), and the lab's host
// side serves it on the socket the API server is configured with (package lab, egress.go).
type ConnectProxy struct {
	// Dial opens the connection to address (host:port).
	Dial func(ctx context.Context, address string) (net.Conn, error)
}

// ServeHTTP answers CONNECT requests; any other method is refused with 405.
func (p ConnectProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodConnect {
		w.Header().Set("Allow", http.MethodConnect)
		http.Error(w, "only CONNECT is served here", http.StatusMethodNotAllowed)
		return
	}
	address := r.Host
	if _, _, err := net.SplitHostPort(address); err != nil {
		http.Error(w, fmt.Sprintf("CONNECT %q: want host:port", address), http.StatusBadRequest)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	target, err := p.Dial(ctx, address)
	cancel()
	if err != nil {
		http.Error(w, fmt.Sprintf("dialing %s: %v", address, err), http.StatusBadGateway)
		return
	}
	client, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		target.Close()
		http.Error(w, "cannot take over the connection: "+err.Error(), http.StatusInternalServerError)
		return
	}
	// The server's deadlines (ReadHeaderTimeout) must not cut a tunnel that lives as long as a kubectl exec.
	_ = client.SetDeadline(time.Time{})
	if _, err := io.WriteString(client, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		client.Close()
		target.Close()
		return
	}
	// Bytes the client sent right behind its request sit in brw's buffer: they go first.
	splice(&bufferedConn{Conn: client, r: brw.Reader}, target)
}

// splice copies a to b and b to a until both directions end, passing each end-of-stream on as a half
// close (so a request-response protocol that closes its sending side still gets its answer), then closes
// both.
func splice(a, b net.Conn) {
	var wg sync.WaitGroup
	pipe := func(dst, src net.Conn) {
		defer wg.Done()
		_, _ = io.Copy(dst, src)
		if cw, ok := unwrap(dst).(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		} else {
			_ = dst.Close()
		}
	}
	wg.Add(2)
	go pipe(a, b)
	go pipe(b, a)
	wg.Wait()
	a.Close()
	b.Close()
}

// bufferedConn is a connection whose first bytes were already read into r.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func unwrap(c net.Conn) net.Conn {
	if bc, ok := c.(*bufferedConn); ok {
		return bc.Conn
	}
	return c
}

// DialConnect opens a connection to address through the HTTP CONNECT proxy at proxyAddr (host:port, TCP).
// ctx bounds the dial and the proxy's answer, not the connection's life.
func DialConnect(ctx context.Context, proxyAddr, address string) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", proxyAddr)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	fail := func(err error) (net.Conn, error) {
		stop()
		conn.Close()
		if ctx.Err() != nil {
			err = errors.Join(err, ctx.Err())
		}
		return nil, fmt.Errorf("CONNECT %s via %s: %w", address, proxyAddr, err)
	}
	req := &http.Request{Method: http.MethodConnect, URL: &url.URL{Opaque: address}, Host: address, Header: http.Header{}}
	if err := req.Write(conn); err != nil {
		return fail(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return fail(err)
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		resp.Body.Close()
		return fail(fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(body))))
	}
	if !stop() {
		return fail(errors.New("cancelled"))
	}
	_ = conn.SetDeadline(time.Time{})
	if br.Buffered() > 0 {
		// The target spoke first and its bytes came with the proxy's answer.
		return &bufferedConn{Conn: conn, r: br}, nil
	}
	return conn, nil
}
