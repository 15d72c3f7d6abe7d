package ipvs_test

import (
	"errors"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
)

// TestNewNetlinkWithoutIPVS runs where the kernel has no IPVS (as on the development hosts): the
// constructor must refuse with ErrNotSupported rather than hand out a handle that silently does nothing.
// The working path is in kernel_test.go.
func TestNewNetlinkWithoutIPVS(t *testing.T) {
	if _, err := netlink.GenlFamilyGet("IPVS"); err == nil {
		t.Skip("this kernel has IPVS; see kernel_test.go")
	}
	i, err := ipvs.NewNetlink()
	if !errors.Is(err, ipvs.ErrNotSupported) {
		t.Fatalf("NewNetlink() = %v, %v; want ErrNotSupported", i, err)
	}
}
