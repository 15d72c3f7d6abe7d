package echo

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// httpMethods are the request-line verbs that switch a connection to HTTP; anything else is the line protocol.
var httpMethods = map[string]bool{
	"GET": true, "HEAD": true, "POST": true, "PUT": true, "DELETE": true, "PATCH": true, "OPTIONS": true,
}

// isHTTPRequestLine tells an HTTP/1.x request line ("GET /path HTTP/1.1") from a line of the line protocol.
func isHTTPRequestLine(line string) (method, target string, ok bool) {
	parts := strings.Fields(line)
	if len(parts) != 3 || !httpMethods[parts[0]] || !strings.HasPrefix(parts[2], "HTTP/1.") {
		return "", "", false
	}
	return parts[0], parts[1], true
}

// handleTCPConn auto-detects the protocol from the first line: HTTP gets one response and the connection is
// closed (so every request is a new connection that IPVS schedules); any other line gets the name, for each
// line, until the client closes.
func handleTCPConn(c net.Conn, name string, state *readiness) {
	r := bufio.NewReader(c)
	first, err := r.ReadString('\n')
	if err != nil && first == "" {
		return
	}
	line := strings.TrimRight(first, "\r\n")
	if method, target, ok := isHTTPRequestLine(line); ok {
		serveHTTP(c, r, method, target, name, state)
		return
	}
	answer := []byte(name + "\n")
	for {
		if _, err := c.Write(answer); err != nil {
			return
		}
		if _, err := r.ReadString('\n'); err != nil {
			return
		}
	}
}

// httpResponse is what one HTTP request gets.
type httpResponse struct {
	code int
	body string
}

// route answers a request path; the readiness admin endpoints change state.
func route(method, target, name string, state *readiness) httpResponse {
	path := parseTarget(target)
	if method == "GET" || method == "HEAD" {
		switch path {
		case "/readyz":
			if state.failing.Load() {
				return httpResponse{503, "not ready\n"}
			}
			return httpResponse{200, "ok\n"}
		case "/admin/fail-readiness":
			state.failing.Store(true)
			return httpResponse{200, "readiness failing\n"}
		case "/admin/pass-readiness":
			state.failing.Store(false)
			return httpResponse{200, "readiness passing\n"}
		}
		if port, ok := strings.CutPrefix(path, "/admin/close-port/"); ok {
			if n, err := strconv.Atoi(port); err == nil && state.ports != nil && state.ports.close(n) {
				return httpResponse{200, "closed " + port + "\n"}
			}
			return httpResponse{404, "not listening on " + port + "\n"}
		}
		if port, ok := strings.CutPrefix(path, "/admin/open-port/"); ok {
			if n, err := strconv.Atoi(port); err == nil && state.ports != nil && state.ports.open(n) {
				return httpResponse{200, "listening on " + port + "\n"}
			}
			return httpResponse{404, "cannot listen on " + port + "\n"}
		}
	}
	return httpResponse{200, name + "\n"}
}

// parseTarget returns the path of an origin-form or absolute-form request target, without the query.
func parseTarget(target string) string {
	if i := strings.Index(target, "://"); i >= 0 {
		rest := target[i+3:]
		j := strings.IndexByte(rest, '/')
		if j < 0 {
			return "/"
		}
		target = rest[j:]
	}
	if i := strings.IndexAny(target, "?#"); i >= 0 {
		target = target[:i]
	}
	if target == "" {
		return "/"
	}
	return target
}

func serveHTTP(c net.Conn, r *bufio.Reader, method, target, name string, state *readiness) {
	// Read the headers (bounded in time so a silent client cannot pin the goroutine) and drain a small body.
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	contentLength := 0
	for {
		h, err := r.ReadString('\n')
		if err != nil {
			return
		}
		h = strings.TrimRight(h, "\r\n")
		if h == "" {
			break
		}
		if k, v, ok := strings.Cut(h, ":"); ok && strings.EqualFold(strings.TrimSpace(k), "Content-Length") {
			contentLength, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	if contentLength > 0 {
		_, _ = io.CopyN(io.Discard, r, int64(min(contentLength, 1<<20)))
	}
	resp := route(method, target, name, state)
	body := resp.body
	if method == "HEAD" {
		body = ""
	}
	_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, _ = fmt.Fprintf(c, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		resp.code, statusText(resp.code), len(resp.body), body)
}

func statusText(code int) string {
	switch code {
	case 200:
		return "OK"
	case 404:
		return "Not Found"
	case 503:
		return "Service Unavailable"
	}
	return "Status"
}
