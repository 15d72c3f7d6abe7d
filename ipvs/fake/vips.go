package fake

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
)

// VIPs is an in-memory ipvs.VIPs: one dummy interface and its addresses. Like the real one, Bind and
// Unbind are idempotent, and binding before EnsureInterface fails with ENODEV. The zero value is usable.
type VIPs struct {
	counters
	exists bool
	down   bool
	addrs  map[netip.Addr]bool
}

var _ ipvs.VIPs = (*VIPs)(nil)

// NewVIPs returns a VIPs whose interface does not exist yet.
func NewVIPs() *VIPs { return &VIPs{} }

// InterfaceExists reports whether EnsureInterface has run since the last DeleteInterface.
func (v *VIPs) InterfaceExists() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.exists
}

// SetDown takes the interface down, as `ip link set NAME down` does; its addresses stay. A test control,
// not counted.
func (v *VIPs) SetDown() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.down = true
}

// InterfaceUp reports whether the interface exists and is up.
func (v *VIPs) InterfaceUp() (bool, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if err := v.rec.op(InterfaceUp); err != nil {
		return false, err
	}
	return v.exists && !v.down, nil
}

// EnsureInterface creates the interface if needed and sets it up.
func (v *VIPs) EnsureInterface() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if err := v.rec.op(EnsureInterface); err != nil {
		return err
	}
	if !v.exists {
		v.exists, v.addrs = true, map[netip.Addr]bool{}
	}
	v.down = false
	return nil
}

// List returns the bound addresses, sorted.
func (v *VIPs) List() ([]netip.Addr, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if err := v.rec.op(List); err != nil {
		return nil, err
	}
	if !v.exists {
		return nil, noInterface("list")
	}
	out := slices.Collect(maps.Keys(v.addrs))
	slices.SortFunc(out, netip.Addr.Compare)
	return out, nil
}

// Bind adds an address; binding a bound address is not an error.
func (v *VIPs) Bind(a netip.Addr) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if err := v.rec.op(Bind); err != nil {
		return err
	}
	if err := checkVIP(a); err != nil {
		return err
	}
	if !v.exists {
		return noInterface("bind " + a.String())
	}
	v.addrs[a] = true
	return nil
}

var _ ipvs.VIPBatcher = (*VIPs)(nil)

// BindAll binds each address as Bind does, counted as one BindAll (the real one sends them in batches).
func (v *VIPs) BindAll(addrs []netip.Addr) []error {
	v.mu.Lock()
	defer v.mu.Unlock()
	errs := make([]error, len(addrs))
	if err := v.rec.op(BindAll); err != nil {
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	for i, a := range addrs {
		switch err := checkVIP(a); {
		case err != nil:
			errs[i] = err
		case !v.exists:
			errs[i] = noInterface("bind " + a.String())
		default:
			v.addrs[a] = true
		}
	}
	return errs
}

// Unbind removes an address; an absent address or interface is not an error.
func (v *VIPs) Unbind(a netip.Addr) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if err := v.rec.op(Unbind); err != nil {
		return err
	}
	if err := checkVIP(a); err != nil {
		return err
	}
	delete(v.addrs, a)
	return nil
}

// DeleteInterface removes the interface and its addresses; an absent interface is not an error.
func (v *VIPs) DeleteInterface() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if err := v.rec.op(DeleteInterface); err != nil {
		return err
	}
	v.exists, v.down, v.addrs = false, false, nil
	return nil
}

func checkVIP(a netip.Addr) error {
	if !a.IsValid() || a.Is4In6() || a.Zone() != "" {
		return fmt.Errorf("vips: invalid address %q: %w", a, unix.EINVAL)
	}
	return nil
}

func noInterface(what string) error {
	return fmt.Errorf("vips: %s: interface does not exist (EnsureInterface first): %w", what, unix.ENODEV)
}
