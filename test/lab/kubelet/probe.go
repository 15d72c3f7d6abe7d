package kubelet

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// probeTarget is where a container's probes go: its pod IP (the node IP for host-network pods), its declared
// ports for named ports, and a way to run exec probes inside the pod.
type probeTarget struct {
	IP    string
	Ports []corev1.ContainerPort
	Exec  func(ctx context.Context, argv []string) error
}

// runProbe performs one probe attempt; nil means success. The kubelet runs in the node's network namespace,
// so HTTP and TCP probes come from the node, as a real kubelet's do.
func runProbe(ctx context.Context, p *corev1.Probe, t probeTarget) error {
	switch {
	case p.HTTPGet != nil:
		return probeHTTP(ctx, p.HTTPGet, t)
	case p.TCPSocket != nil:
		host := p.TCPSocket.Host
		if host == "" {
			host = t.IP
		}
		port, err := resolvePort(p.TCPSocket.Port, t.Ports)
		if err != nil {
			return err
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return err
		}
		return c.Close()
	case p.Exec != nil:
		if len(p.Exec.Command) == 0 {
			return fmt.Errorf("exec probe without a command")
		}
		return t.Exec(ctx, p.Exec.Command)
	case p.GRPC != nil:
		return fmt.Errorf("grpc probes are %w", errUnsupported)
	}
	return fmt.Errorf("probe has no handler")
}

// resolvePort turns a number or a named container port into a port number.
func resolvePort(port intstr.IntOrString, ports []corev1.ContainerPort) (int, error) {
	if port.Type == intstr.Int {
		if port.IntVal <= 0 || port.IntVal > 65535 {
			return 0, fmt.Errorf("invalid port %d", port.IntVal)
		}
		return int(port.IntVal), nil
	}
	if n, err := strconv.Atoi(port.StrVal); err == nil {
		return resolvePort(intstr.FromInt32(int32(n)), ports)
	}
	for _, p := range ports {
		if p.Name == port.StrVal {
			return int(p.ContainerPort), nil
		}
	}
	return 0, fmt.Errorf("no container port named %q", port.StrVal)
}

func probeHTTP(ctx context.Context, g *corev1.HTTPGetAction, t probeTarget) error {
	host := g.Host
	if host == "" {
		host = t.IP
	}
	port, err := resolvePort(g.Port, t.Ports)
	if err != nil {
		return err
	}
	scheme := strings.ToLower(string(g.Scheme))
	if scheme == "" {
		scheme = "http"
	}
	path := g.Path
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	u := &url.URL{Scheme: scheme, Host: net.JoinHostPort(host, strconv.Itoa(port))}
	if parsed, err := url.Parse(path); err == nil {
		u.Path, u.RawQuery = parsed.Path, parsed.RawQuery
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "kube-probe/1.37")
	req.Header.Set("Accept", "*/*")
	for _, h := range g.HTTPHeaders {
		if strings.EqualFold(h.Name, "Host") {
			req.Host = h.Value
			continue
		}
		req.Header.Add(h.Name, h.Value)
	}
	client := &http.Client{Transport: &http.Transport{
		DisableKeepAlives: true,
		Proxy:             nil,
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, // as the kubelet: probes do not verify certificates
	}}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 10*1024))
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("HTTP probe failed with statuscode: %d", resp.StatusCode)
	}
	return nil
}

// probeState applies a probe's success and failure thresholds to single attempts.
type probeState struct {
	successThreshold, failureThreshold int
	successes, failures                int
	ok                                 bool
}

// newProbeState starts as a kubelet does: readiness and startup probes fail until they succeed; liveness
// passes until it fails.
func newProbeState(p *corev1.Probe, initial bool) *probeState {
	s := &probeState{successThreshold: int(p.SuccessThreshold), failureThreshold: int(p.FailureThreshold), ok: initial}
	if s.successThreshold < 1 {
		s.successThreshold = 1
	}
	if s.failureThreshold < 1 {
		s.failureThreshold = 3
	}
	return s
}

// observe records one attempt and reports whether the probe's result changed.
func (s *probeState) observe(success bool) (changed bool) {
	if success {
		s.failures = 0
		s.successes++
		if !s.ok && s.successes >= s.successThreshold {
			s.ok = true
			return true
		}
		return false
	}
	s.successes = 0
	s.failures++
	if s.ok && s.failures >= s.failureThreshold {
		s.ok = false
		return true
	}
	return false
}

// probeTiming is a probe's schedule with the API defaults applied.
type probeTiming struct {
	InitialDelay, Period, Timeout time.Duration
}

func timingOf(p *corev1.Probe) probeTiming {
	t := probeTiming{
		InitialDelay: time.Duration(p.InitialDelaySeconds) * time.Second,
		Period:       time.Duration(p.PeriodSeconds) * time.Second,
		Timeout:      time.Duration(p.TimeoutSeconds) * time.Second,
	}
	if t.Period <= 0 {
		t.Period = 10 * time.Second
	}
	if t.Timeout <= 0 {
		t.Timeout = time.Second
	}
	return t
}

// probeLoop runs p every period after its initial delay, until ctx ends, and calls onResult after every
// attempt with the thresholded result and whether it just changed. gate, when set, skips attempts while it
// returns false (readiness and liveness wait for the startup probe).
func probeLoop(ctx context.Context, p *corev1.Probe, t probeTarget, state *probeState, gate func() bool,
	onResult func(ok, changed bool, err error)) {
	timing := timingOf(p)
	if !sleepCtx(ctx, timing.InitialDelay) {
		return
	}
	ticker := time.NewTicker(timing.Period)
	defer ticker.Stop()
	for {
		if gate == nil || gate() {
			attemptCtx, cancel := context.WithTimeout(ctx, timing.Timeout)
			err := runProbe(attemptCtx, p, t)
			cancel()
			if ctx.Err() != nil {
				return
			}
			changed := state.observe(err == nil)
			onResult(state.ok, changed, err)
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}
