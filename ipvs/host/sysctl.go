package host

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Setting is one sysctl and the value the data path needs, with why.
type Setting struct {
	Name  string // dotted, as sysctl(8) spells it
	Value string
	Why   string
	// Restore says that `agent --cleanup` may put the node's previous value back: the setting matters to the
	// agent's IPVS state alone. Forwarding is never restored: the node's pod network depends on it too.
	Restore bool
}

// Settings are the sysctls every agent writes. The net.ipv4.vs ones exist once ip_vs is loaded, and all of
// them are per network namespace.
var Settings = []Setting{
	{"net.ipv4.vs.conntrack", "1", "IPVS keeps conntrack entries; without them no nft masquerade applies to IPVS traffic", true},
	{"net.ipv4.vs.expire_nodest_conn", "1", "a connection whose real server was deleted is reset at its next packet instead of hanging", true},
	{"net.ipv4.vs.expire_quiescent_template", "1", "persistence templates to a weight-0 real server expire, so new connections move", true},
	{"net.ipv4.ip_forward", "1", "pods on other nodes reach backends through this node", false},
}

// StrictARPSettings are written when strict ARP is on (the default, --strict-arp).
var StrictARPSettings = []Setting{
	{"net.ipv4.conf.all.arp_ignore", "1", "the node does not answer ARP for ClusterIPs bound to the dummy device", true},
	{"net.ipv4.conf.all.arp_announce", "2", "ARP requests use the outgoing interface's address, never a ClusterIP", true},
}

// SettingsIPv6 are written only when the node serves IPv6: forwarding=1 on an IPv4-only node would make
// the kernel drop the default routes it learned from router advertisements (accept_ra=1 accepts them only
// while forwarding is off).
var SettingsIPv6 = []Setting{
	{"net.ipv6.conf.all.forwarding", "1", "IPv6 pods on other nodes reach backends through this node", false},
}

// ConnReuseSetting is written on kernels from 4.1 (where the sysctl appeared) to before 5.9: there,
// conn_reuse_mode=1 makes IPVS drop the first SYN of a connection that reuses a source port still in
// TIME_WAIT towards a real server, and the client stalls for a 1 s SYN retransmit (kubernetes#81775).
// Linux 5.9 (commit 35dfb013149f, "ipvs: queue delayed work to expire no destination connections if
// expire_nodest_conn=1") removed the stall, and there 0 would only lose rescheduling away from removed
// real servers, so it is left alone, as kube-proxy does (kubernetes#93297).
var ConnReuseSetting = Setting{"net.ipv4.vs.conn_reuse_mode", "0", "no 1 s stall when a client reuses a source port (kernels 4.1 to 5.8)", true}

// Kernels between which ConnReuseSetting is written.
var (
	ConnReuseMinKernel   = KernelVersion{4, 1}
	ConnReuseFixedKernel = KernelVersion{5, 9}
)

// KernelVersion is a kernel release's major and minor number.
type KernelVersion struct{ Major, Minor int }

func (v KernelVersion) String() string { return fmt.Sprintf("%d.%d", v.Major, v.Minor) }

// Less reports whether v is older than w.
func (v KernelVersion) Less(w KernelVersion) bool {
	return v.Major < w.Major || (v.Major == w.Major && v.Minor < w.Minor)
}

// ParseKernelRelease reads the version from a release as uname -r prints it: "6.1.0-56-amd64",
// "5.4.0-1103-aws", "4.19.91-27.al7.x86_64".
func ParseKernelRelease(release string) (KernelVersion, error) {
	parts := strings.SplitN(release, ".", 3)
	if len(parts) < 2 {
		return KernelVersion{}, fmt.Errorf("host: kernel release %q is not MAJOR.MINOR[.PATCH][-SUFFIX]", release)
	}
	major, err := strconv.Atoi(parts[0])
	if err != nil {
		return KernelVersion{}, fmt.Errorf("host: kernel release %q: %w", release, err)
	}
	minor := parts[1]
	if i := strings.IndexFunc(minor, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		minor = minor[:i]
	}
	n, err := strconv.Atoi(minor)
	if err != nil {
		return KernelVersion{}, fmt.Errorf("host: kernel release %q: %w", release, err)
	}
	return KernelVersion{major, n}, nil
}

// RunningKernel is the version of the running kernel. Equivalent to: `uname -r`.
func RunningKernel() (KernelVersion, error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return KernelVersion{}, err
	}
	return ParseKernelRelease(unix.ByteSliceToString(u.Release[:]))
}

// SysctlOptions are what decides which sysctls a node gets.
type SysctlOptions struct {
	Kernel KernelVersion
	// IPv6 is set when the node serves IPv6 Services.
	IPv6 bool
	// StrictARP is the agent's --strict-arp.
	StrictARP bool
}

// PlanSysctls returns the settings for a node: Settings always, StrictARPSettings with strict ARP,
// ConnReuseSetting on kernels 4.1 to 5.8, SettingsIPv6 when the node serves IPv6.
func PlanSysctls(o SysctlOptions) []Setting {
	out := slices.Clone(Settings)
	if !o.Kernel.Less(ConnReuseMinKernel) && o.Kernel.Less(ConnReuseFixedKernel) {
		out = append(out, ConnReuseSetting)
	}
	if o.StrictARP {
		out = append(out, StrictARPSettings...)
	}
	if o.IPv6 {
		out = append(out, SettingsIPv6...)
	}
	return out
}

// StateDir is where the node's previous values of the settings the agent changed are kept, for
// `agent --cleanup`. /run is a tmpfs: it empties at reboot, exactly when the sysctls return to the node's
// own values.
const StateDir = "/run/ipvs-operator"

// StateFile is the record for the caller's network namespace: sysctls are per namespace, and a host can
// hold several (the lab's nodes are namespaces of one VM). The namespace's inode number names it; it
// stays the same until reboot, as /run's contents do.
func StateFile() string {
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &st); err != nil {
		return filepath.Join(StateDir, "sysctl-previous.json")
	}
	return filepath.Join(StateDir, fmt.Sprintf("sysctl-previous-net%d.json", st.Ino))
}

// Sysctl writes sysctls under Root, /proc/sys unless set (tests use a temporary tree), and records the
// previous values of Restore settings in StateFile ("" means do not record).
type Sysctl struct {
	Root      string
	StateFile string
}

// ApplySysctls writes the settings for the running kernel, with strict ARP, and with IPv6 forwarding when
// the kernel has IPv6, and returns what it changed, as "name: old -> new". Records nothing.
// Equivalent to: `sysctl -w name=value ...`.
func ApplySysctls() (changed []string, err error) {
	s := Sysctl{}
	k, err := RunningKernel()
	if err != nil {
		return nil, err
	}
	return s.Apply(PlanSysctls(SysctlOptions{Kernel: k, StrictARP: true, IPv6: s.HasIPv6()}))
}

func (s Sysctl) root() string {
	if s.Root == "" {
		return "/proc/sys"
	}
	return s.Root
}

func (s Sysctl) path(name string) string {
	return filepath.Join(s.root(), filepath.FromSlash(strings.ReplaceAll(name, ".", "/")))
}

// HasIPv6 reports whether the kernel has IPv6 in this network namespace.
func (s Sysctl) HasIPv6() bool {
	_, err := os.Stat(filepath.Join(s.root(), "net", "ipv6"))
	return err == nil
}

// recorded is the state file: per sysctl, the node's value before the agent first changed it, and what
// the agent set.
type recorded map[string]recordEntry

type recordEntry struct {
	Previous string `json:"previous"`
	Set      string `json:"set"`
}

// Apply writes every setting whose current value differs, goes on past a failure, and returns the
// changes made and the failures joined. The first time it changes a Restore setting, the previous value
// is recorded in StateFile before the write; a later run finds the agent's own value and keeps the
// record as it is.
func (s Sysctl) Apply(settings []Setting) (changed []string, err error) {
	var errs []error
	rec, recErr := s.readRecord()
	if recErr != nil {
		errs = append(errs, recErr)
	}
	for _, st := range settings {
		path := s.path(st.Name)
		cur, rerr := os.ReadFile(path)
		if rerr != nil {
			hint := ""
			if strings.HasPrefix(st.Name, "net.ipv4.vs.") && errors.Is(rerr, os.ErrNotExist) {
				hint = " (load ip_vs first)"
			}
			errs = append(errs, fmt.Errorf("host: sysctl %s%s: %w", st.Name, hint, rerr))
			continue
		}
		old := strings.TrimSpace(string(cur))
		if old == st.Value {
			continue
		}
		if st.Restore && s.StateFile != "" && recErr == nil {
			if _, ok := rec[st.Name]; !ok {
				rec[st.Name] = recordEntry{Previous: old, Set: st.Value}
				if werr := s.writeRecord(rec); werr != nil {
					errs = append(errs, werr)
					continue // never change what could not be recorded
				}
			}
		}
		// One write of the whole value, as /proc/sys expects (no temporary file and rename).
		if werr := os.WriteFile(path, []byte(st.Value+"\n"), 0); werr != nil {
			errs = append(errs, fmt.Errorf("host: sysctl -w %s=%s: %w", st.Name, st.Value, werr))
			continue
		}
		changed = append(changed, fmt.Sprintf("%s: %s -> %s", st.Name, old, st.Value))
	}
	return changed, errors.Join(errs...)
}

// Restore puts back the recorded previous values of the sysctls the agent changed, where each still holds
// what the agent set (a value someone changed since is theirs: it is left and reported), then removes the
// record. It returns one line per recorded sysctl.
func (s Sysctl) Restore() (report []string, err error) {
	rec, err := s.readRecord()
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(rec))
	for n := range rec {
		names = append(names, n)
	}
	slices.Sort(names)
	var errs []error
	for _, name := range names {
		r := rec[name]
		cur, rerr := os.ReadFile(s.path(name))
		if rerr != nil {
			if errors.Is(rerr, fs.ErrNotExist) {
				report = append(report, fmt.Sprintf("sysctl %s is gone (module unloaded): nothing to restore", name))
				continue
			}
			errs = append(errs, fmt.Errorf("host: sysctl %s: %w", name, rerr))
			continue
		}
		now := strings.TrimSpace(string(cur))
		if now != r.Set {
			report = append(report, fmt.Sprintf("sysctl %s left at %s: changed by someone else since the agent set %s", name, now, r.Set))
			continue
		}
		if werr := os.WriteFile(s.path(name), []byte(r.Previous+"\n"), 0); werr != nil {
			errs = append(errs, fmt.Errorf("host: sysctl -w %s=%s: %w", name, r.Previous, werr))
			continue
		}
		report = append(report, fmt.Sprintf("restored sysctl %s: %s -> %s", name, now, r.Previous))
	}
	if len(errs) > 0 {
		return report, errors.Join(errs...) // keep the record: a second run retries
	}
	if s.StateFile != "" {
		if rerr := os.Remove(s.StateFile); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			return report, rerr
		}
	}
	return report, nil
}

func (s Sysctl) readRecord() (recorded, error) {
	rec := recorded{}
	if s.StateFile == "" {
		return rec, nil
	}
	b, err := os.ReadFile(s.StateFile)
	if errors.Is(err, fs.ErrNotExist) {
		return rec, nil
	}
	if err != nil {
		return nil, fmt.Errorf("host: reading the sysctls' previous values: %w", err)
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("host: %s: %w", s.StateFile, err)
	}
	return rec, nil
}

// writeRecord replaces the state file atomically (a crash leaves the old record or the new one).
func (s Sysctl) writeRecord(rec recorded) error {
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(s.StateFile), 0o700); err != nil {
		return fmt.Errorf("host: recording the sysctls' previous values: %w", err)
	}
	tmp := s.StateFile + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("host: recording the sysctls' previous values: %w", err)
	}
	if err := os.Rename(tmp, s.StateFile); err != nil {
		return fmt.Errorf("host: recording the sysctls' previous values: %w", err)
	}
	return nil
}
