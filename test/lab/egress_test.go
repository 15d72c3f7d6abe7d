package lab

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apiserver/pkg/server/egressselector"

	"github.com/ipvs-operator/ipvs-operator/test/lab/controlplane"
	"github.com/ipvs-operator/ipvs-operator/test/lab/labd"
)

// answer is an HTTP server on loopback that answers every request with name.
func answer(t *testing.T, name string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, name) }))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// The API server's own egress code (the dialer its "cluster" selection gets from the lab's configuration
// file) reaches a pod's address through labd, and a Node's kubelet endpoint on the host's loopback directly,
// as it did before the lab had an egress selector.
func TestEgressProxyRoutesTheAPIServersClusterTraffic(t *testing.T) {
	// A stand-in for labd in the VM: every address it is asked for is "the pod".
	pod := answer(t, "pod")
	var mu sync.Mutex
	var viaLabd []string
	fakeLabd := httptest.NewServer(labd.ConnectProxy{Dial: func(ctx context.Context, address string) (net.Conn, error) {
		mu.Lock()
		viaLabd = append(viaLabd, address)
		mu.Unlock()
		var d net.Dialer
		return d.DialContext(ctx, "tcp", pod)
	}})
	t.Cleanup(fakeLabd.Close)
	kubelet := answer(t, "kubelet")

	dir := t.TempDir()
	e, err := startEgressProxy(dir, strings.TrimPrefix(fakeLabd.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	conf, err := controlplane.EgressSelectorConfiguration(e.Socket())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "egress-selector.yaml")
	if err := os.WriteFile(path, conf, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := egressselector.ReadEgressSelectorConfiguration(path)
	if err != nil {
		t.Fatal(err)
	}
	if errs := egressselector.ValidateEgressSelectorConfiguration(cfg); len(errs) > 0 {
		t.Fatalf("kube-apiserver refuses the configuration: %v", errs.ToAggregate())
	}
	sel, err := egressselector.NewEgressSelector(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dial, err := sel.Lookup(egressselector.Cluster.AsNetworkContext())
	if err != nil || dial == nil {
		t.Fatalf("no dialer for the cluster selection (%v): the API server would dial pods directly", err)
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: dial}}

	for _, tt := range []struct {
		name, address, want string
		wantViaLabd         []string
	}{
		{"a pod's address goes through labd", "10.244.2.7:8080", "pod", []string{"10.244.2.7:8080"}},
		{"an IPv6 pod's address too", "[fd00:10:244:1::5]:80", "pod", []string{"[fd00:10:244:1::5]:80"}},
		{"a Node's kubelet endpoint on loopback stays on the host", kubelet, "kubelet", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			mu.Lock()
			viaLabd = nil
			mu.Unlock()
			resp, err := hc.Get("http://" + tt.address + "/")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(body) != tt.want {
				t.Fatalf("answered %q, want %q", body, tt.want)
			}
			mu.Lock()
			defer mu.Unlock()
			if strings.Join(viaLabd, ",") != strings.Join(tt.wantViaLabd, ",") {
				t.Fatalf("labd was asked for %q, want %q", viaLabd, tt.wantViaLabd)
			}
		})
	}
}

// A run directory too deep for a unix socket's path still gets one, elsewhere, removed on Close.
func TestEgressProxySocketOutsideADeepRunDir(t *testing.T) {
	deep := filepath.Join(t.TempDir(), strings.Repeat("d", 60), strings.Repeat("e", 60))
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	e, err := startEgressProxy(deep, "127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	if len(e.Socket()) > maxSocketPath {
		t.Fatalf("socket path %d bytes long", len(e.Socket()))
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Dir(e.Socket())); !os.IsNotExist(err) {
		t.Fatalf("%s left behind (%v)", filepath.Dir(e.Socket()), err)
	}
}
