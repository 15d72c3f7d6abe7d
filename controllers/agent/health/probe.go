package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
)

// ProbeFunc probes one target once and returns nil when it passes. It must return by ctx's deadline.
type ProbeFunc func(ctx context.Context, t Target) error

// ErrStatus is matched by the error of an HTTP probe whose answer had a status the check does not expect.
var ErrStatus = errors.New("unexpected HTTP status")

// httpClient never keeps connections (a probe must see a fresh connect each time, and thousands of idle
// connections would cost the node and the pods), never follows redirects (the status is the answer), and
// never uses a proxy from the environment.
var httpClient = &http.Client{
	Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true, DisableCompression: true},
	CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	},
}

// Probe is the real probe, from the agent's network namespace (the node's, with hostNetwork):
// TCP connects and closes at once; HTTP sends a GET of the check's path and compares the status.
//
// Equivalent to: `nc -z -w TIMEOUT ADDR PORT` or `curl -s -o /dev/null -m TIMEOUT -w '%{http_code}' http://ADDR:PORT/PATH`.
func Probe(ctx context.Context, t Target) error {
	if t.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t.Timeout)
		defer cancel()
	}
	addr := t.AddrPort().String()
	if t.Protocol != HTTP {
		return DialTCP(ctx, addr)
	}
	path := t.Path
	if path == "" {
		path = "/"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "ipvs-operator-health/1")
	resp, err := httpClient.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	_ = resp.Body.Close()
	if !t.StatusOK(resp.StatusCode) {
		return fmt.Errorf("%w %d from %s", ErrStatus, resp.StatusCode, t)
	}
	return nil
}

// DialTCP connects to addr and closes the connection: the TCP check.
func DialTCP(ctx context.Context, addr string) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return c.Close()
}
