package kubelet

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func hostPort(t *testing.T, addr string) (string, int) {
	t.Helper()
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(p)
	return h, n
}

func TestRunProbe(t *testing.T) {
	var failing atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/readyz":
			if failing.Load() || r.Header.Get("X-Check") != "yes" {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
		case "/moved":
			http.Redirect(w, r, "/readyz", http.StatusFound)
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	defer srv.Close()
	host, port := hostPort(t, srv.Listener.Addr().String())
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	_, closedPort := hostPort(t, closed.Addr().String())
	closed.Close()

	target := probeTarget{IP: host, Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: int32(port)}},
		Exec: func(ctx context.Context, argv []string) error { return runCommand(ctx, argv) }}
	header := []corev1.HTTPHeader{{Name: "X-Check", Value: "yes"}}
	httpProbe := func(path string, p intstr.IntOrString, h []corev1.HTTPHeader) *corev1.Probe {
		return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: p, HTTPHeaders: h}}}
	}
	cases := []struct {
		name    string
		probe   *corev1.Probe
		failing bool
		ok      bool
	}{
		{"http 200 by number", httpProbe("/readyz", intstr.FromInt32(int32(port)), header), false, true},
		{"http 200 by name", httpProbe("/readyz", intstr.FromString("http"), header), false, true},
		{"http 503", httpProbe("/readyz", intstr.FromInt32(int32(port)), header), true, false},
		{"http header missing", httpProbe("/readyz", intstr.FromInt32(int32(port)), nil), false, false},
		{"http 404", httpProbe("/nope", intstr.FromInt32(int32(port)), header), false, false},
		{"http unknown port name", httpProbe("/readyz", intstr.FromString("metrics"), header), false, false},
		{"http refused", httpProbe("/readyz", intstr.FromInt32(int32(closedPort)), header), false, false},
		{"tcp open", &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(int32(port))}}}, false, true},
		{"tcp closed", &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(int32(closedPort))}}}, false, false},
		{"exec true", &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"true"}}}}, false, true},
		{"exec false", &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"false"}}}}, false, false},
		{"grpc unsupported", &corev1.Probe{ProbeHandler: corev1.ProbeHandler{GRPC: &corev1.GRPCAction{Port: 1}}}, false, false},
	}
	for _, c := range cases {
		failing.Store(c.failing)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := runProbe(ctx, c.probe, target)
		cancel()
		if (err == nil) != c.ok {
			t.Errorf("%s: runProbe = %v, want ok=%v", c.name, err, c.ok)
		}
	}
}

func TestProbeStateThresholds(t *testing.T) {
	cases := []struct {
		name             string
		success, failure int32
		initial          bool
		attempts         []bool
		wantOK           []bool
		wantChanged      []bool
	}{
		{"readiness: one success flips", 1, 3, false,
			[]bool{false, true, false, false, false, true},
			[]bool{false, true, true, true, false, true},
			[]bool{false, true, false, false, true, true}},
		{"success threshold 2", 2, 1, false,
			[]bool{true, false, true, true, false},
			[]bool{false, false, false, true, false},
			[]bool{false, false, false, true, true}},
		{"liveness starts ok", 1, 2, true,
			[]bool{false, true, false, false},
			[]bool{true, true, true, false},
			[]bool{false, false, false, true}},
		{"defaults when zero", 0, 0, true,
			[]bool{false, false, false},
			[]bool{true, true, false},
			[]bool{false, false, true}},
	}
	for _, c := range cases {
		s := newProbeState(&corev1.Probe{SuccessThreshold: c.success, FailureThreshold: c.failure}, c.initial)
		for i, a := range c.attempts {
			changed := s.observe(a)
			if s.ok != c.wantOK[i] || changed != c.wantChanged[i] {
				t.Errorf("%s: attempt %d (%v): ok=%v changed=%v, want %v %v", c.name, i, a, s.ok, changed, c.wantOK[i], c.wantChanged[i])
			}
		}
	}
}

// TestProbeLoopFollowsServer runs the loop against a server that flips, with a 1 s period.
func TestProbeLoopFollowsServer(t *testing.T) {
	var failing atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if failing.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	host, port := hostPort(t, srv.Listener.Addr().String())
	p := &corev1.Probe{PeriodSeconds: 1, TimeoutSeconds: 1, FailureThreshold: 1, SuccessThreshold: 1,
		ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.FromInt32(int32(port))}}}
	changes := make(chan bool, 10)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go probeLoop(ctx, p, probeTarget{IP: host}, newProbeState(p, false), nil, func(ok, changed bool, _ error) {
		if changed {
			changes <- ok
		}
	})
	expect := func(want bool, within time.Duration) {
		t.Helper()
		select {
		case got := <-changes:
			if got != want {
				t.Fatalf("change to %v, want %v", got, want)
			}
		case <-time.After(within):
			t.Fatalf("no change to %v within %v", want, within)
		}
	}
	expect(true, 500*time.Millisecond) // the first attempt runs at once (no initial delay)
	failing.Store(true)
	expect(false, 2500*time.Millisecond)
	failing.Store(false)
	expect(true, 2500*time.Millisecond)
}

func TestResolvePort(t *testing.T) {
	ports := []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}
	cases := []struct {
		in   intstr.IntOrString
		want int
		ok   bool
	}{
		{intstr.FromInt32(80), 80, true},
		{intstr.FromString("http"), 8080, true},
		{intstr.FromString("9090"), 9090, true},
		{intstr.FromString("grpc"), 0, false},
		{intstr.FromInt32(0), 0, false},
	}
	for _, c := range cases {
		got, err := resolvePort(c.in, ports)
		if got != c.want || (err == nil) != c.ok {
			t.Errorf("resolvePort(%v) = %d, %v", c.in.String(), got, err)
		}
	}
}
