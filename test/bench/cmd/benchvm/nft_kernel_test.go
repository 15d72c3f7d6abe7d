package main

import (
	"net/netip"
	"os/exec"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// TestNFTViewKernel loads a ruleset shaped like kube-proxy's nftables mode (testdata/kube-proxy.nft, the
// rules kube-proxy v1.37 writes for a Service of three endpoints and one of a single endpoint) into a fresh
// network namespace with nft, and reads it back the way `benchvm watch` does. It needs root and nf_tables
// (the host or the lab VM); it skips elsewhere.
func TestNFTViewKernel(t *testing.T) {
	nftBin, err := exec.LookPath("nft")
	if err != nil {
		t.Skip("needs nft")
	}
	enterFreshNetns(t)

	v, err := newNFTView()
	if err != nil {
		t.Fatal(err)
	}
	// Before kube-proxy made its table: no Services, no error.
	svcs, err := v.services()
	if err != nil || len(svcs) != 0 {
		t.Fatalf("empty namespace: %v, %v", svcs, err)
	}
	if out, err := exec.Command(nftBin, "-f", "testdata/kube-proxy.nft").CombinedOutput(); err != nil {
		t.Fatalf("nft -f: %v\n%s", err, out)
	}
	svcs, err = v.services()
	if err != nil {
		t.Fatal(err)
	}
	want := []serviceIP{
		{addr: netip.MustParseAddr("10.96.64.2"), proto: unix.IPPROTO_TCP, port: 80, chain: "service-AAAA-bench/s00001/tcp/http"},
		{addr: netip.MustParseAddr("10.96.64.3"), proto: unix.IPPROTO_TCP, port: 80, chain: "service-BBBB-bench/s00002/tcp/http"},
	}
	slices.SortFunc(svcs, func(a, b serviceIP) int { return a.addr.Compare(b.addr) })
	if !slices.Equal(svcs, want) {
		t.Fatalf("services = %+v, want %+v", svcs, want)
	}
	for chain, wantEps := range map[string][]string{
		"service-AAAA-bench/s00001/tcp/http": {"10.244.16.6:8080", "10.244.16.7:8080", "10.244.16.8:8080"},
		"service-BBBB-bench/s00002/tcp/http": {"10.244.16.11:8080"},
	} {
		eps, err := v.endpoints(chain)
		if err != nil {
			t.Fatalf("%s: %v", chain, err)
		}
		got := make([]string, 0, len(eps))
		for _, ep := range eps {
			got = append(got, ep.String())
		}
		slices.Sort(got)
		if !slices.Equal(got, wantEps) {
			t.Errorf("%s: endpoints %v, want %v", chain, got, wantEps)
		}
	}

	// The watch commands on the same state.
	w := &watcher{nft: v}
	for _, c := range []struct {
		f    []string
		want bool
	}{
		{[]string{"10.96.64.2", "80", "10.244.16.7", "8080", "1"}, true},
		{[]string{"10.96.64.2", "80", "10.244.16.7", "8080", "0"}, false},
		{[]string{"10.96.64.2", "80", "10.244.16.9", "8080", "0"}, true},
		{[]string{"10.96.64.9", "80", "10.244.16.9", "8080", "0"}, true}, // no such Service: not active
	} {
		got, _, err := w.nftFlip(c.f)
		if err != nil || got != c.want {
			t.Errorf("nftflip %v = %v, %v; want %v", c.f, got, err, c.want)
		}
	}
	for _, c := range []struct {
		f    []string
		want bool
	}{
		{[]string{"10.96.64.0/18", "2", "1"}, true},
		{[]string{"10.96.64.0/18", "2", "3"}, false}, // s00002 has one endpoint
		{[]string{"10.96.64.0/18", "3", "1"}, false},
	} {
		got, _, err := w.nftFull(c.f, map[string]bool{})
		if err != nil || got != c.want {
			t.Errorf("nftfull %v = %v, %v; want %v", c.f, got, err, c.want)
		}
	}
}
