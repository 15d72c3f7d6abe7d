package main

import (
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// TestAPIConfigAsksForNoCompression: the agent's requests do not ask the API server to gzip its answers
// (a client from the plain config does, which is what makes the test able to fail).
func TestAPIConfigAsksForNoCompression(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("Accept-Encoding"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"major":"1","minor":"37","gitVersion":"v1.37.1"}`))
	}))
	defer srv.Close()
	get := func(cfg *rest.Config) string {
		t.Helper()
		mu.Lock()
		seen = nil
		mu.Unlock()
		cs, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cs.Discovery().ServerVersion(); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(seen) != 1 {
			t.Fatalf("%d requests, want 1", len(seen))
		}
		return seen[0]
	}
	// Over TLS, as the agent talks to the API server (client-go hands a plain-HTTP config without TLS
	// settings the shared default transport, which compresses whatever the config says).
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	base := &rest.Config{Host: srv.URL, TLSClientConfig: rest.TLSClientConfig{CAData: ca}}
	if got := get(base); got != "gzip" {
		t.Fatalf("a client from the plain config sent Accept-Encoding %q; the test expects gzip", got)
	}
	if got := get(apiConfig(base)); got != "" {
		t.Errorf("the agent's client sent Accept-Encoding %q, want none", got)
	}
	if base.DisableCompression {
		t.Error("apiConfig changed the config it was given")
	}
}
