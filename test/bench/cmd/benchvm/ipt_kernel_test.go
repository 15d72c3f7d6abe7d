package main

import (
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestIPTViewKernel loads rules shaped like kube-proxy's iptables mode (testdata/kube-proxy-iptables.rules:
// what kube-proxy v1.37 writes for a Service of three endpoints without comments, as in its large-cluster
// mode, and one of a single endpoint with them) into a fresh network namespace with iptables-nft-restore, and
// reads them back the way `benchvm watch` does. It needs root, nf_tables and iptables-nft (the host or the
// lab VM); it skips elsewhere.
func TestIPTViewKernel(t *testing.T) {
	restore, err := exec.LookPath("iptables-nft-restore")
	if err != nil {
		t.Skip("needs iptables-nft-restore")
	}
	enterFreshNetns(t)

	v, err := newIPTView()
	if err != nil {
		t.Fatal(err)
	}
	// Before kube-proxy wrote its rules: no Services, no error.
	svcs, err := v.services()
	if err != nil || len(svcs) != 0 {
		t.Fatalf("empty namespace: %v, %v", svcs, err)
	}
	w := &watcher{ipt: v}
	if ok, _, err := w.iptFlip([]string{"10.96.64.2", "80", "10.244.16.7", "8080", "0"}); err != nil || !ok {
		t.Fatalf("iptflip before any rule: %v, %v; want not active", ok, err)
	}
	cmd := exec.Command(restore, "--noflush", "testdata/kube-proxy-iptables.rules")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("iptables-nft-restore: %v\n%s", err, out)
	}
	svcs, err = v.services()
	if err != nil {
		t.Fatal(err)
	}
	want := map[iptServiceKey]string{
		{addr: netip.MustParseAddr("10.96.64.2"), proto: unix.IPPROTO_TCP, port: 80}: "KUBE-SVC-AAAAAAAAAAAAAAAA",
		{addr: netip.MustParseAddr("10.96.64.2"), proto: unix.IPPROTO_UDP, port: 53}: "KUBE-SVC-CCCCCCCCCCCCCCCC",
		{addr: netip.MustParseAddr("10.96.64.3"), proto: unix.IPPROTO_TCP, port: 80}: "KUBE-SVC-BBBBBBBBBBBBBBBB",
	}
	if len(svcs) != len(want) {
		t.Fatalf("services = %v, want %v", svcs, want)
	}
	for k, c := range want {
		if svcs[k] != c {
			t.Errorf("service %v: chain %q, want %q", k, svcs[k], c)
		}
	}
	for key, wantEps := range map[iptServiceKey][]string{
		{addr: netip.MustParseAddr("10.96.64.2"), proto: unix.IPPROTO_TCP, port: 80}: {"10.244.16.6:8080", "10.244.16.7:8080", "10.244.16.8:8080"},
		{addr: netip.MustParseAddr("10.96.64.3"), proto: unix.IPPROTO_TCP, port: 80}: {"10.244.16.11:8080"},
	} {
		eps, err := v.activeEndpoints(key)
		if err != nil {
			t.Fatalf("%v: %v", key, err)
		}
		got := make([]string, 0, len(eps))
		for _, ep := range eps {
			got = append(got, ep.String())
		}
		slices.Sort(got)
		if !slices.Equal(got, wantEps) {
			t.Errorf("%v: endpoints %v, want %v", key, got, wantEps)
		}
	}

	for _, c := range []struct {
		f    []string
		want bool
	}{
		{[]string{"10.96.64.2", "80", "10.244.16.7", "8080", "1"}, true},
		{[]string{"10.96.64.2", "80", "10.244.16.7", "8080", "0"}, false},
		{[]string{"10.96.64.2", "80", "10.244.16.9", "8080", "0"}, true},
		{[]string{"10.96.64.9", "80", "10.244.16.9", "8080", "0"}, true}, // no such Service: not active
	} {
		got, _, err := w.iptFlip(c.f)
		if err != nil || got != c.want {
			t.Errorf("iptflip %v = %v, %v; want %v", c.f, got, err, c.want)
		}
	}
	for _, c := range []struct {
		f    []string
		want bool
	}{
		{[]string{"10.96.64.0/18", "2", "1"}, true},
		{[]string{"10.96.64.0/18", "2", "3"}, false}, // s00002 has one endpoint
		{[]string{"10.96.64.0/18", "3", "1"}, false}, // the UDP port does not count
	} {
		got, _, err := w.iptFull(c.f, map[string]bool{})
		if err != nil || got != c.want {
			t.Errorf("iptfull %v = %v, %v; want %v", c.f, got, err, c.want)
		}
	}

	// A flip as kube-proxy writes it: the endpoint's jump and chain go in one restore; the watch sees it.
	flip := exec.Command(restore, "--noflush")
	flip.Stdin = strings.NewReader("*nat\n-D KUBE-SVC-AAAAAAAAAAAAAAAA -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-AAAAAAAAAAAAAAA2\n" +
		"-F KUBE-SEP-AAAAAAAAAAAAAAA2\n-X KUBE-SEP-AAAAAAAAAAAAAAA2\nCOMMIT\n")
	if out, err := flip.CombinedOutput(); err != nil {
		t.Fatalf("iptables-nft-restore (flip): %v\n%s", err, out)
	}
	if ok, _, err := w.iptFlip([]string{"10.96.64.2", "80", "10.244.16.7", "8080", "0"}); err != nil || !ok {
		t.Errorf("iptflip after the endpoint left: %v, %v; want not active", ok, err)
	}
	if ok, _, err := w.iptFlip([]string{"10.96.64.2", "80", "10.244.16.6", "8080", "1"}); err != nil || !ok {
		t.Errorf("iptflip of an endpoint that stayed: %v, %v; want active", ok, err)
	}
}
