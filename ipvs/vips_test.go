package ipvs_test

import (
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
)

// TestVIPsAddresses exercises Bind, List and Unbind on a real kernel. The development hosts have no dummy
// driver, so the addresses go on a bridge, which EnsureInterface must refuse to adopt; kernel_test.go
// covers the dummy device itself.
func TestVIPsAddresses(t *testing.T) {
	n := newTestNS(t)
	const name = "vip-test"
	v, err := ipvs.NewDummyVIPsInNamespace(name, n.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.(interface{ Close() error }).Close() })
	a4, a6 := netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("fd00::10")

	if err := v.Bind(a4); !errors.Is(err, unix.ENODEV) {
		t.Errorf("Bind without interface = %v, want ENODEV", err)
	}
	if err := v.Unbind(a4); err != nil {
		t.Errorf("Unbind without interface = %v, want nil", err)
	}
	if err := v.DeleteInterface(); err != nil {
		t.Errorf("DeleteInterface without interface = %v, want nil", err)
	}

	if err := n.h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}); err != nil {
		t.Skipf("cannot create a bridge: %v", err)
	}
	if err := v.EnsureInterface(); err == nil {
		t.Error("EnsureInterface adopted a bridge")
	}
	link, err := n.h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.h.LinkSetUp(link); err != nil { // brings an IPv6 link-local address, which List must hide
		t.Fatal(err)
	}

	for _, a := range []netip.Addr{a6, a4, a4, a6} { // twice: idempotent
		if err := v.Bind(a); err != nil {
			t.Fatalf("Bind(%s): %v", a, err)
		}
	}
	got, err := v.List()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []netip.Addr{a4, a6}) {
		t.Errorf("List() = %v, want [%s %s]", got, a4, a6)
	}
	addrs, err := n.h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		ones, bits := a.Mask.Size()
		if a.IP.IsLinkLocalUnicast() {
			continue
		}
		if ones != bits {
			t.Errorf("%s bound as /%d, want a host address", a.IP, ones)
		}
		if a.IP.To4() == nil && (a.Flags&unix.IFA_F_NODAD == 0 || a.Flags&unix.IFA_F_TENTATIVE != 0) {
			t.Errorf("%s flags %#x: want NODAD and not tentative", a.IP, a.Flags)
		}
	}

	for _, a := range []netip.Addr{a4, a4, netip.MustParseAddr("10.96.0.99")} { // absent: not an error
		if err := v.Unbind(a); err != nil {
			t.Fatalf("Unbind(%s): %v", a, err)
		}
	}
	if got, _ := v.List(); !slices.Equal(got, []netip.Addr{a6}) {
		t.Errorf("List() after Unbind = %v", got)
	}
	if err := v.DeleteInterface(); err == nil {
		t.Error("DeleteInterface deleted a bridge")
	}
	if err := v.Bind(netip.Addr{}); !errors.Is(err, unix.EINVAL) {
		t.Errorf("Bind(invalid) = %v, want EINVAL", err)
	}
}

// TestVIPsRecreatedInterface checks that a cached link is looked up again once the device is replaced.
func TestVIPsRecreatedInterface(t *testing.T) {
	n := newTestNS(t)
	const name = "vip-test"
	v, err := ipvs.NewDummyVIPsInNamespace(name, n.path)
	if err != nil {
		t.Fatal(err)
	}
	add := func() {
		if err := n.h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}); err != nil {
			t.Skipf("cannot create a bridge: %v", err)
		}
	}
	add()
	if err := v.Bind(netip.MustParseAddr("10.96.0.1")); err != nil {
		t.Fatal(err)
	}
	link, _ := n.h.LinkByName(name)
	if err := n.h.LinkDel(link); err != nil {
		t.Fatal(err)
	}
	add()
	if err := v.Bind(netip.MustParseAddr("10.96.0.2")); err != nil {
		t.Fatalf("Bind after the device was re-created: %v", err)
	}
	if got, _ := v.List(); !slices.Equal(got, []netip.Addr{netip.MustParseAddr("10.96.0.2")}) {
		t.Errorf("List() = %v", got)
	}
}
