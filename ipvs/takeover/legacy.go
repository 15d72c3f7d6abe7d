package takeover

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// LegacyFirewall reads and removes kube-proxy's chains as iptables-legacy made them: the kernel's x_tables
// tables nat and filter of both families, through the socket options iptables-legacy itself uses (the blob
// is read and rewritten in xtables.go). Only tables the node has already loaded are read
// (/proc/net/ip_tables_names): asking the kernel for another would create it.
//
// Its methods must run on a thread in the node's network namespace (x_tables are per namespace).
type LegacyFirewall struct {
	// LockPath is iptables' lock file, taken around each rewrite when it exists so that no iptables-legacy
	// command (kubelet's, a CNI plugin's) changes the table in between; "" is /run/xtables.lock.
	LockPath string
}

var _ Firewall = LegacyFirewall{}

// The socket options of <linux/netfilter_ipv4/ip_tables.h> (the IPv6 ones have the same numbers).
const (
	iptSoSetReplace = 64
	iptSoGetInfo    = 64
	iptSoGetEntries = 65
	// xtTableMaxNameLen is XT_TABLE_MAXNAMELEN.
	xtTableMaxNameLen = 32
	// Struct sizes: ipt_getinfo, ipt_get_entries' header, ipt_replace's header (its counters pointer at 88),
	// xt_counters.
	xtGetInfoSize    = 84
	xtGetEntriesHead = 40
	xtReplaceHead    = 96
	xtCountersSize   = 16
)

// xtSocket is the family's socket level and a socket to ask it with: a UDP socket does (the options pass
// through to x_tables for any socket of the family, CAP_NET_ADMIN is checked), so no CAP_NET_RAW is needed.
func xtSocket(fam Family) (fd, level int, err error) {
	domain, level := unix.AF_INET, unix.IPPROTO_IP
	if fam == IPv6 {
		domain, level = unix.AF_INET6, unix.IPPROTO_IPV6
	}
	fd, err = unix.Socket(domain, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	return fd, level, err
}

func getsockopt(fd, level, opt int, buf []byte) error {
	l := uint32(len(buf))
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt),
		uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&l)), 0)
	if e != 0 {
		return e
	}
	return nil
}

// loadedTables lists the family's x_tables tables the kernel has in this network namespace.
func loadedTables(fam Family) ([]string, error) {
	// thread-self: /proc/net is the network namespace of the process's first thread, which need not be the
	// calling thread's.
	path := "/proc/thread-self/net/ip_tables_names"
	if fam == IPv6 {
		path = "/proc/thread-self/net/ip6_tables_names"
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil // no ip_tables module: no legacy table
	}
	if err != nil {
		return nil, err
	}
	return strings.Fields(string(b)), nil
}

// xtGet reads a table. Equivalent to: `iptables-legacy-save -t TABLE`.
func xtGet(fam Family, table string) (xtTable, error) {
	fd, level, err := xtSocket(fam)
	if err != nil {
		return xtTable{}, err
	}
	defer unix.Close(fd)
	info := make([]byte, xtGetInfoSize)
	copy(info, table)
	if err := getsockopt(fd, level, iptSoGetInfo, info); err != nil {
		return xtTable{}, fmt.Errorf("IPT_SO_GET_INFO %s: %w", table, err)
	}
	ne := binary.NativeEndian
	t := xtTable{Name: table, ValidHooks: ne.Uint32(info[32:]), NumEntries: ne.Uint32(info[76:])}
	for h := range xtHooks {
		t.HookEntry[h] = ne.Uint32(info[36+4*h:])
		t.Underflow[h] = ne.Uint32(info[56+4*h:])
	}
	size := ne.Uint32(info[80:])
	buf := make([]byte, xtGetEntriesHead+int(size))
	copy(buf, table)
	ne.PutUint32(buf[32:], size)
	if err := getsockopt(fd, level, iptSoGetEntries, buf); err != nil {
		// EAGAIN: the table changed size since GET_INFO.
		return xtTable{}, fmt.Errorf("IPT_SO_GET_ENTRIES %s: %w", table, err)
	}
	t.Entries = buf[xtGetEntriesHead:]
	return t, nil
}

// xtReplace swaps a table for another version of it in one step; the kernel refuses (EAGAIN) if the table no
// longer has old's number of entries. Equivalent to: `iptables-legacy-restore --noflush` of the whole table.
func xtReplace(fam Family, old, t xtTable) error {
	fd, level, err := xtSocket(fam)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ne := binary.NativeEndian
	buf := make([]byte, xtReplaceHead+len(t.Entries))
	copy(buf[:xtTableMaxNameLen], t.Name)
	ne.PutUint32(buf[32:], t.ValidHooks)
	ne.PutUint32(buf[36:], t.NumEntries)
	ne.PutUint32(buf[40:], uint32(len(t.Entries)))
	for h := range xtHooks {
		ne.PutUint32(buf[44+4*h:], t.HookEntry[h])
		ne.PutUint32(buf[64+4*h:], t.Underflow[h])
	}
	// The kernel hands the old table's counters back through this pointer.
	counters := make([]byte, max(1, int(old.NumEntries))*xtCountersSize)
	ne.PutUint32(buf[84:], old.NumEntries)
	ne.PutUint64(buf[88:], uint64(uintptr(unsafe.Pointer(&counters[0]))))
	copy(buf[xtReplaceHead:], t.Entries)
	_, _, e := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), iptSoSetReplace,
		uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0)
	runtime.KeepAlive(counters)
	if e != 0 {
		return fmt.Errorf("IPT_SO_SET_REPLACE %s: %w", t.Name, e)
	}
	return nil
}

// Read implements Firewall. Equivalent to: `iptables-legacy-save -t nat; iptables-legacy-save -t filter`.
func (LegacyFirewall) Read(family Family) ([]Chain, []Jump, error) {
	loaded, err := loadedTables(family)
	if err != nil {
		return nil, nil, err
	}
	var chains []Chain
	var jumps []Jump
	for _, name := range firewallTables {
		if !slices.Contains(loaded, name) {
			continue
		}
		t, err := xtGet(family, name)
		if err != nil {
			return nil, nil, err
		}
		c, j, err := xtRead(t, family)
		if err != nil {
			return nil, nil, err
		}
		chains, jumps = append(chains, c...), append(jumps, j...)
	}
	return chains, jumps, nil
}

// Delete implements Firewall: per table, one replacement of the whole table without the jumps and chains
// (tried again when another writer changed the table in between).
func (f LegacyFirewall) Delete(family Family, jumps []Jump, chains []Chain) error {
	unlock, err := f.lock()
	if err != nil {
		return err
	}
	defer unlock()
	for _, name := range firewallTables {
		if !slices.ContainsFunc(chains, func(c Chain) bool { return c.Table == name }) &&
			!slices.ContainsFunc(jumps, func(j Jump) bool { return j.From.Table == name }) {
			continue
		}
		for attempt := 0; ; attempt++ {
			old, err := xtGet(family, name)
			if err != nil {
				return err
			}
			t, err := xtRemove(old, family, jumps, chains)
			if err != nil {
				return err
			}
			err = xtReplace(family, old, t)
			if errors.Is(err, unix.EAGAIN) && attempt < 3 {
				continue
			}
			if err != nil {
				return err
			}
			break
		}
	}
	return nil
}

// lock takes iptables' lock file if it exists (iptables-legacy's own writers take it; without it mounted, a
// concurrent writer is caught only when it changed the table's number of entries).
func (f LegacyFirewall) lock() (func(), error) {
	path := f.LockPath
	if path == "" {
		path = "/run/xtables.lock"
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return func() {}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	// As `iptables -w 5`: a holder that does not let go within 5 s fails this attempt (tried again later).
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { _ = unix.Close(fd) }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) || time.Now().After(deadline) {
			_ = unix.Close(fd)
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
}
