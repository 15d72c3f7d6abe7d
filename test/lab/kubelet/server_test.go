package kubelet

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/transport/spdy"
	clientexec "k8s.io/client-go/util/exec"
	remotecommandserver "k8s.io/cri-streaming/pkg/streaming/remotecommand"
)

func TestSplitRunsAndSelect(t *testing.T) {
	const (
		start1 = "=== 2026-11-30T10:00:00Z lab kubelet: starting /bin/echo-server\n"
		exit1  = "=== 2026-11-30T10:00:05Z lab kubelet: exited code=1 signal=0\n"
		start2 = "=== 2026-11-30T10:00:06Z lab kubelet: starting /bin/echo-server\n"
	)
	tests := []struct {
		name     string
		log      string
		previous bool
		want     string
		wantErr  error
	}{
		{name: "empty", log: "", want: ""},
		{name: "one run", log: start1 + "a\nb\n", want: "a\nb\n"},
		{name: "current after a restart", log: start1 + "a\n" + exit1 + start2 + "c\n", want: "c\n"},
		{name: "previous", log: start1 + "a\n" + exit1 + start2 + "c\n", previous: true, want: "a\n"},
		{name: "no previous", log: start1 + "a\n", previous: true, wantErr: errNoPrevious},
		{name: "exited run is still current", log: start1 + "a\n" + exit1, want: "a\n"},
		{name: "unterminated last line", log: start1 + "a\nb", want: "a\nb"},
		{name: "container output that looks like a marker but is not the kubelet's", log: start1 + "=== test\n", want: "=== test\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			run, err := selectRun(splitRuns([]byte(tt.log)), tt.previous)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if got := string(bytes.Join(run.Lines, nil)); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestTailLines(t *testing.T) {
	lines := [][]byte{[]byte("a\n"), []byte("b\n"), []byte("c\n")}
	for n, want := range map[int]string{-1: "a\nb\nc\n", 0: "", 2: "b\nc\n", 5: "a\nb\nc\n"} {
		if got := string(bytes.Join(tailLines(lines, n), nil)); got != want {
			t.Errorf("tailLines(%d) = %q, want %q", n, got, want)
		}
	}
}

// testCerts is a CA, a serving certificate for 127.0.0.1 and a client certificate, in files and PEM.
type testCerts struct {
	dir                             string
	caFile, certFile, keyFile       string
	clientCertPEM, clientKeyPEM     []byte
	caPEM                           []byte
	strangerCertPEM, strangerKeyPEM []byte // signed by another CA
}

func newTestCerts(t *testing.T) testCerts {
	t.Helper()
	dir := t.TempDir()
	mkCA := func(name string) (*x509.Certificate, *ecdsa.PrivateKey, []byte) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		return c, k, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	}
	issue := func(ca *x509.Certificate, caKey *ecdsa.PrivateKey, tmpl *x509.Certificate) ([]byte, []byte) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
		tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, k.Public(), caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, _ := x509.MarshalPKCS8PrivateKey(k)
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
	}
	ca, caKey, caPEM := mkCA("test-ca")
	other, otherKey, _ := mkCA("other-ca")
	serverPEM, serverKey := issue(ca, caKey, &x509.Certificate{Subject: pkix.Name{CommonName: "kubelet"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}})
	c := testCerts{dir: dir, caPEM: caPEM,
		caFile: filepath.Join(dir, "ca.crt"), certFile: filepath.Join(dir, "kubelet.crt"), keyFile: filepath.Join(dir, "kubelet.key")}
	c.clientCertPEM, c.clientKeyPEM = issue(ca, caKey, &x509.Certificate{Subject: pkix.Name{CommonName: "kube-apiserver-kubelet-client"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	c.strangerCertPEM, c.strangerKeyPEM = issue(other, otherKey, &x509.Certificate{Subject: pkix.Name{CommonName: "stranger"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	for f, data := range map[string][]byte{c.caFile: caPEM, c.certFile: serverPEM, c.keyFile: serverKey} {
		if err := os.WriteFile(f, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// fakeRuntime runs exec commands on the host, forwards ports to 127.0.0.1 and serves logs from a file.
type fakeRuntime struct {
	logPath string
	alive   func() bool
}

func (f *fakeRuntime) PodUID(namespace, pod string) (types.UID, error) {
	if namespace != "ns" || pod != "web" {
		return "", errPodNotFound
	}
	return "uid-1", nil
}

func (f *fakeRuntime) ContainerLog(namespace, pod, container string) (string, types.UID, func() bool, error) {
	uid, err := f.PodUID(namespace, pod)
	if err != nil {
		return "", "", nil, err
	}
	if container != "echo" {
		return "", "", nil, errContainerNotFound
	}
	return f.logPath, uid, f.alive, nil
}

func (f *fakeRuntime) ExecInContainer(ctx context.Context, _, _, _ string, cmd []string, in io.Reader, out, errOut io.WriteCloser,
	_ bool, _ <-chan remotecommandserver.TerminalSize, _ time.Duration) error {
	return runExec(ctx, cmd, []string{"PATH=/usr/bin:/bin"}, in, out, errOut, time.Second)
}

func (f *fakeRuntime) PortForward(_ context.Context, _, _ string, port int32, stream io.ReadWriteCloser) error {
	conn, err := net.Dial("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return err
	}
	return pipeStreams(conn, stream)
}

// startTestServer serves the kubelet API for rt on 127.0.0.1 and returns its URL and a client config
// that authenticates with the CA's client certificate.
func startTestServer(t *testing.T, rt podRuntime) (string, *rest.Config, testCerts) {
	t.Helper()
	certs := newTestCerts(t)
	tlsConfig, err := serverTLS(ServeOptions{CertFile: certs.certFile, KeyFile: certs.keyFile, ClientCAFile: certs.caFile})
	if err != nil {
		t.Fatal(err)
	}
	l, err := listenIn("", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serveOn(ctx, l, tlsConfig, apiHandler(rt, logr.Discard())) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	base := "https://" + l.Addr().String()
	cfg := &rest.Config{Host: base, TLSClientConfig: rest.TLSClientConfig{
		CAData: certs.caPEM, CertData: certs.clientCertPEM, KeyData: certs.clientKeyPEM}}
	return base, cfg, certs
}

func TestExecThroughSPDY(t *testing.T) {
	base, cfg, _ := startTestServer(t, &fakeRuntime{})
	execURL := func(cmd ...string) *url.URL {
		q := url.Values{"command": cmd, "output": {"1"}, "error": {"1"}, "input": {"1"}}
		u, _ := url.Parse(base + "/exec/ns/web/echo?" + q.Encode())
		return u
	}
	run := func(stdin string, cmd ...string) (string, string, error) {
		ex, err := remotecommand.NewSPDYExecutor(cfg, "POST", execURL(cmd...))
		if err != nil {
			t.Fatal(err)
		}
		var out, errOut bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		err = ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errOut})
		return out.String(), errOut.String(), err
	}

	out, errOut, err := run("", "sh", "-c", "echo out; echo err >&2; exit 3")
	var exitErr clientexec.CodeExitError
	if !errors.As(err, &exitErr) || exitErr.Code != 3 {
		t.Fatalf("exit: got %v (%T), want exit code 3", err, err)
	}
	if out != "out\n" || errOut != "err\n" {
		t.Errorf("stdout %q stderr %q", out, errOut)
	}
	out, _, err = run("hello\n", "cat")
	if err != nil || out != "hello\n" {
		t.Errorf("cat: %q, %v", out, err)
	}
	// The command ends while the client still has stdin to send: the request must not hang on it.
	ex, _ := remotecommand.NewSPDYExecutor(cfg, "POST", execURL("true"))
	pr, pw := io.Pipe()
	defer pw.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: pr, Stdout: io.Discard, Stderr: io.Discard}); err != nil {
		t.Errorf("exec with open stdin: %v", err)
	}
}

func TestAPIRefusesUnknownPodsAndStrangers(t *testing.T) {
	base, cfg, certs := startTestServer(t, &fakeRuntime{logPath: "/nonexistent"})
	tr, err := rest.TransportFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	for path, want := range map[string]int{
		"/healthz":                          http.StatusOK,
		"/containerLogs/ns/nope/echo":       http.StatusNotFound,
		"/containerLogs/ns/web/other":       http.StatusNotFound,
		"/containerLogs/ns/web/echo":        http.StatusOK, // not started yet: empty
		"/exec/ns/nope/echo?command=true":   http.StatusNotFound,
		"/exec/ns/web/uid-2/echo?command=x": http.StatusNotFound, // a pod replaced under the same name
		"/portForward/ns/nope":              http.StatusNotFound,
	} {
		resp, err := hc.Get(base + path)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s: %s, want %d", path, resp.Status, want)
		}
	}
	for name, c := range map[string]rest.TLSClientConfig{
		"no client certificate":    {CAData: certs.caPEM},
		"another CA's certificate": {CAData: certs.caPEM, CertData: certs.strangerCertPEM, KeyData: certs.strangerKeyPEM},
	} {
		tr, err := rest.TransportFor(&rest.Config{Host: base, TLSClientConfig: c})
		if err != nil {
			t.Fatal(err)
		}
		resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get(base + "/healthz")
		if err == nil {
			_ = resp.Body.Close()
			t.Errorf("%s: got %s, want a TLS failure", name, resp.Status)
		}
	}
}

func TestContainerLogs(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "ns_web_echo.log")
	const old = "=== t0 lab kubelet: starting echo\nold 1\n=== t1 lab kubelet: exited code=1 signal=0\n"
	if err := os.WriteFile(logPath, []byte(old+"=== t2 lab kubelet: starting echo\nnew 1\nnew 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	base, cfg, _ := startTestServer(t, &fakeRuntime{logPath: logPath, alive: func() bool { return true }})
	tr, _ := rest.TransportFor(cfg)
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	get := func(query string) (string, int) {
		resp, err := hc.Get(base + "/containerLogs/ns/web/echo" + query)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body), resp.StatusCode
	}
	for query, want := range map[string]string{
		"":                           "new 1\nnew 2\n",
		"?previous=true":             "old 1\n",
		"?tailLines=1":               "new 2\n",
		"?limitBytes=3":              "new",
		"?previous=true&tailLines=0": "",
	} {
		if got, code := get(query); got != want || code != http.StatusOK {
			t.Errorf("logs%s: %d %q, want %q", query, code, got, want)
		}
	}
	if body, code := get("?tailLines=1"); code != http.StatusOK || body != "new 2\n" {
		t.Errorf("tailLines=1: %d %q", code, body)
	}
	if err := os.WriteFile(logPath, []byte("=== t2 lab kubelet: starting echo\nonly\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if body, code := get("?previous=true"); code != http.StatusBadRequest || !strings.Contains(body, `previous terminated container not found: container "echo" in pod "web"`) {
		t.Errorf("previous of a container that never restarted: %d %q, want 400 and why", code, body)
	}
	if err := os.WriteFile(logPath, []byte(old+"=== t2 lab kubelet: starting echo\nnew 1\nnew 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, code := get("?follow=true&previous=true"); code != http.StatusBadRequest {
		t.Errorf("follow+previous: %d, want 400", code)
	}

	// follow: lines appended later arrive; the run's exited marker ends the stream.
	go func() {
		time.Sleep(400 * time.Millisecond)
		f, _ := os.OpenFile(logPath, os.O_APPEND|os.O_WRONLY, 0)
		_, _ = f.WriteString("new 3\n")
		time.Sleep(400 * time.Millisecond)
		_, _ = f.WriteString("=== t3 lab kubelet: exited code=0 signal=0\nnot this run\n")
		_ = f.Close()
	}()
	t0 := time.Now()
	got, code := get("?follow=true")
	if want := "new 1\nnew 2\nnew 3\n"; got != want || code != http.StatusOK {
		t.Errorf("follow: %d %q, want %q", code, got, want)
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Errorf("follow took %s after the run ended", d)
	}
}

func TestPortForwardThroughSPDY(t *testing.T) {
	// The "pod": an echo of one line.
	podL, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer podL.Close()
	go func() {
		for {
			c, err := podL.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 64)
				n, _ := c.Read(buf)
				_, _ = c.Write(append([]byte("pong:"), buf[:n]...))
			}()
		}
	}()
	podPort := podL.Addr().(*net.TCPAddr).Port

	base, cfg, _ := startTestServer(t, &fakeRuntime{})
	rt, upgrader, err := spdy.RoundTripperFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(base + "/portForward/ns/web")
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: rt}, "POST", u)
	stop, ready := make(chan struct{}), make(chan struct{})
	fw, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{fmt.Sprintf("0:%d", podPort)}, stop, ready, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- fw.ForwardPorts() }()
	defer func() {
		close(stop)
		_ = <-errc
	}()
	select {
	case <-ready:
	case err := <-errc:
		t.Fatalf("port-forward: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("port-forward not ready")
	}
	ports, err := fw.GetPorts()
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 { // several connections over one forward
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", ports[0].Local))
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		msg := fmt.Sprintf("ping %d", i)
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(c)
		_ = c.Close()
		if want := "pong:" + msg; string(got) != want {
			t.Errorf("through the forward: %q, want %q", got, want)
		}
	}
}

// A followed log whose pod is gone ends, with the lines written before it went.
func TestFollowEndsWithThePodAndKeepsItsLastLines(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "ns_web_echo.log")
	if err := os.WriteFile(logPath, []byte("=== t0 lab kubelet: starting echo\nfirst\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var gone atomic.Bool
	base, cfg, _ := startTestServer(t, &fakeRuntime{logPath: logPath, alive: func() bool { return !gone.Load() }})
	go func() {
		time.Sleep(300 * time.Millisecond)
		f, _ := os.OpenFile(logPath, os.O_APPEND|os.O_WRONLY, 0)
		_, _ = f.WriteString("last words\n")
		_ = f.Close()
		gone.Store(true) // no exited marker: the follower sees the pod gone right after the write
	}()
	tr, _ := rest.TransportFor(cfg)
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(base + "/containerLogs/ns/web/echo?follow=true")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if want := "first\nlast words\n"; string(body) != want {
		t.Errorf("got %q, want %q", body, want)
	}
}
