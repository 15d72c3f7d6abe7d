package host

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Setting is one sysctl and the value the data path needs, with why.
type Setting struct {
	Name  string // dotted, as sysctl(8) spells it
	Value string
	Why   string
}

// Settings are the sysctls ApplySysctls writes. The net.ipv4.vs ones exist once ip_vs is loaded, and
// all of them are per network namespace.
var Settings = []Setting{
	{"net.ipv4.vs.conntrack", "1", "IPVS keeps conntrack entries; without them no nft masquerade applies to IPVS traffic"},
	{"net.ipv4.vs.expire_nodest_conn", "1", "a connection whose real server was deleted is reset at its next packet instead of hanging"},
	{"net.ipv4.vs.expire_quiescent_template", "1", "persistence templates to a weight-0 real server expire, so new connections move"},
	{"net.ipv4.ip_forward", "1", "pods on other nodes reach backends through this node"},
	{"net.ipv4.conf.all.arp_ignore", "1", "the node does not answer ARP for ClusterIPs bound to the dummy device"},
	{"net.ipv4.conf.all.arp_announce", "2", "ARP requests use the outgoing interface's address, never a ClusterIP"},
}

// SettingsIPv6 are written too when the kernel has IPv6.
var SettingsIPv6 = []Setting{
	{"net.ipv6.conf.all.forwarding", "1", "IPv6 pods on other nodes reach backends through this node"},
}

// Sysctl writes sysctls under Root, /proc/sys unless set (tests use a temporary tree).
type Sysctl struct {
	Root string
}

// ApplySysctls writes Settings (and SettingsIPv6 when IPv6 is present) under /proc/sys and returns what it
// changed, as "name: old -> new". Equivalent to: `sysctl -w name=value ...`.
func ApplySysctls() (changed []string, err error) { return Sysctl{}.Apply() }

// Apply writes every setting whose current value differs, goes on past a failure, and returns the
// changes made and the failures joined.
func (s Sysctl) Apply() (changed []string, err error) {
	root := s.Root
	if root == "" {
		root = "/proc/sys"
	}
	settings := Settings
	if _, statErr := os.Stat(filepath.Join(root, "net", "ipv6")); statErr == nil {
		settings = append(settings[:len(settings):len(settings)], SettingsIPv6...)
	}
	var errs []error
	for _, st := range settings {
		path := filepath.Join(root, filepath.FromSlash(strings.ReplaceAll(st.Name, ".", "/")))
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
		// One write of the whole value, as /proc/sys expects (no temporary file and rename).
		if werr := os.WriteFile(path, []byte(st.Value+"\n"), 0); werr != nil {
			errs = append(errs, fmt.Errorf("host: sysctl -w %s=%s: %w", st.Name, st.Value, werr))
			continue
		}
		changed = append(changed, fmt.Sprintf("%s: %s -> %s", st.Name, old, st.Value))
	}
	return changed, errors.Join(errs...)
}
