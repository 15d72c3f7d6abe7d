package labd

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func post(t *testing.T, srv *httptest.Server, path string, in, out any) int {
	t.Helper()
	body, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(srv.URL+path, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode
}

func newServer(t *testing.T) *httptest.Server {
	d := NewDaemon()
	d.PowerOff = func() {}
	srv := httptest.NewServer(d)
	t.Cleanup(func() { d.killAll(); srv.Close() })
	return srv
}

func TestExec(t *testing.T) {
	srv := newServer(t)
	var r ExecResponse
	post(t, srv, "/exec", ExecRequest{Argv: []string{"sh", "-c", "echo out; echo err >&2; exit 3"}}, &r)
	if r.ExitCode != 3 || r.Stdout != "out\n" || r.Stderr != "err\n" || r.Error != "" {
		t.Fatalf("got %+v", r)
	}
	r = ExecResponse{}
	post(t, srv, "/exec", ExecRequest{Argv: []string{"sh", "-c", "echo a; echo b >&2"}, Combined: true}, &r)
	if r.ExitCode != 0 || r.Stdout != "a\nb\n" || r.Stderr != "" {
		t.Fatalf("combined: got %+v", r)
	}
	r = ExecResponse{}
	post(t, srv, "/exec", ExecRequest{Argv: []string{"cat"}, Stdin: "hello"}, &r)
	if r.Stdout != "hello" {
		t.Fatalf("stdin: got %+v", r)
	}
	r = ExecResponse{}
	post(t, srv, "/exec", ExecRequest{Argv: []string{"/no/such/program"}}, &r)
	if r.ExitCode != -1 || r.Error == "" {
		t.Fatalf("missing program: got %+v", r)
	}
	r = ExecResponse{}
	post(t, srv, "/exec", ExecRequest{Netns: "../x", Argv: []string{"true"}}, &r)
	if r.ExitCode != -1 || !strings.Contains(r.Error, "bad netns") {
		t.Fatalf("bad netns: got %+v", r)
	}
	if code := post(t, srv, "/exec", ExecRequest{}, nil); code != http.StatusBadRequest {
		t.Fatalf("empty argv: status %d", code)
	}
}

func TestExecTimeoutKillsTheProcessGroup(t *testing.T) {
	srv := newServer(t)
	var r ExecResponse
	t0 := time.Now()
	// The shell's child keeps stdout open: the reply must not wait for it.
	post(t, srv, "/exec", ExecRequest{Argv: []string{"sh", "-c", "sleep 30; echo never"}, TimeoutSeconds: 0.5}, &r)
	if !r.TimedOut || r.ExitCode != -1 || time.Since(t0) > 10*time.Second {
		t.Fatalf("got %+v after %s", r, time.Since(t0))
	}
}

func TestBackgroundWaitKill(t *testing.T) {
	srv := newServer(t)
	var r ExecResponse
	post(t, srv, "/exec", ExecRequest{Argv: []string{"sleep", "30"}, Background: true}, &r)
	if r.Pid <= 0 {
		t.Fatalf("got %+v", r)
	}
	var w WaitResponse
	post(t, srv, "/wait", WaitRequest{Pid: r.Pid}, &w)
	if !w.Running {
		t.Fatalf("wait: %+v", w)
	}
	post(t, srv, "/kill", KillRequest{Pid: r.Pid}, nil)
	w = WaitResponse{}
	post(t, srv, "/wait", WaitRequest{Pid: r.Pid, TimeoutSeconds: 5}, &w)
	if w.Running || w.ExitCode != -1 {
		t.Fatalf("after kill: %+v", w)
	}

	dir := t.TempDir()
	r = ExecResponse{}
	post(t, srv, "/exec", ExecRequest{Argv: []string{"sh", "-c", "echo logged; exit 7"}, Background: true,
		LogFile: dir + "/sub/bg.log"}, &r)
	w = WaitResponse{}
	post(t, srv, "/wait", WaitRequest{Pid: r.Pid, TimeoutSeconds: 5}, &w)
	if w.Running || w.ExitCode != 7 {
		t.Fatalf("exit code: %+v", w)
	}
	var out ExecResponse
	post(t, srv, "/exec", ExecRequest{Argv: []string{"cat", dir + "/sub/bg.log"}}, &out)
	if out.Stdout != "logged\n" {
		t.Fatalf("log file: %+v", out)
	}
	if code := post(t, srv, "/wait", WaitRequest{Pid: 999999}, nil); code != http.StatusNotFound {
		t.Fatalf("unknown pid: status %d", code)
	}
}

func TestDial(t *testing.T) {
	srv := newServer(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	var r DialResponse
	post(t, srv, "/dial", DialRequest{Address: addr}, &r)
	if !r.Connected {
		t.Fatalf("got %+v", r)
	}
	ln.Close()
	r = DialResponse{}
	post(t, srv, "/dial", DialRequest{Address: addr, TimeoutSeconds: 2}, &r)
	if r.Connected || r.Error == "" {
		t.Fatalf("closed port: got %+v", r)
	}
}

func TestHealthzAndPoweroff(t *testing.T) {
	d := NewDaemon()
	called := make(chan struct{})
	d.PowerOff = func() { close(called) }
	srv := httptest.NewServer(d)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/healthz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	resp.Body.Close()
	post(t, srv, "/poweroff", struct{}{}, nil)
	select {
	case <-called:
	case <-time.After(5 * time.Second):
		t.Fatal("PowerOff not called")
	}
}
