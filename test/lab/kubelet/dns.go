package kubelet

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// resolvConf is the content of a resolv.conf.
type resolvConf struct {
	Nameservers []string
	Searches    []string
	Options     []string // "name" or "name:value"
}

func (r resolvConf) String() string {
	var b strings.Builder
	for _, ns := range r.Nameservers {
		fmt.Fprintf(&b, "nameserver %s\n", ns)
	}
	if len(r.Searches) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(r.Searches, " "))
	}
	if len(r.Options) > 0 {
		fmt.Fprintf(&b, "options %s\n", strings.Join(r.Options, " "))
	}
	return b.String()
}

// parseResolvConf reads the nameserver, search and options lines of a resolv.conf (the node's).
func parseResolvConf(data []byte) resolvConf {
	var r resolvConf
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		if i := strings.IndexAny(line, "#;"); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "nameserver":
			r.Nameservers = append(r.Nameservers, f[1])
		case "search":
			r.Searches = f[1:] // the last search line wins, as in the resolver
		case "options":
			r.Options = append(r.Options, f[1:]...)
		}
	}
	return r
}

// dnsSettings are the kubelet's --cluster-dns and --cluster-domain, and the node's own resolv.conf.
type dnsSettings struct {
	ClusterDNS    []net.IP
	ClusterDomain string
	Host          resolvConf
}

// podResolvConf is the resolv.conf the kubelet gives a pod, by its dnsPolicy:
//   - ClusterFirst (the default; for host-network pods only ClusterFirstWithHostNet): the cluster DNS
//     servers, search <ns>.svc.<domain> svc.<domain> <domain> then the node's search path, options ndots:5;
//     without --cluster-dns it falls back to Default, as the kubelet does;
//   - Default: the node's resolv.conf;
//   - None: nothing but spec.dnsConfig.
//
// spec.dnsConfig is then merged in: its nameservers and searches are appended (duplicates dropped), its
// options override the ones of the same name.
func podResolvConf(pod *corev1.Pod, s dnsSettings) resolvConf {
	var r resolvConf
	cluster := false
	switch pod.Spec.DNSPolicy {
	case corev1.DNSNone:
	case corev1.DNSDefault:
		r = s.Host
	case corev1.DNSClusterFirstWithHostNet:
		cluster = true
	default: // ClusterFirst, or unset
		cluster = !pod.Spec.HostNetwork
		if !cluster {
			r = s.Host
		}
	}
	if cluster {
		if len(s.ClusterDNS) == 0 {
			r = s.Host
		} else {
			for _, ip := range s.ClusterDNS {
				r.Nameservers = append(r.Nameservers, ip.String())
			}
			if d := s.ClusterDomain; d != "" {
				r.Searches = []string{pod.Namespace + ".svc." + d, "svc." + d, d}
			}
			r.Searches = uniq(append(r.Searches, s.Host.Searches...))
			r.Options = []string{"ndots:5"}
		}
	}
	// Copies: the node's settings are shared by every pod.
	r = resolvConf{Nameservers: clone(r.Nameservers), Searches: clone(r.Searches), Options: clone(r.Options)}
	if c := pod.Spec.DNSConfig; c != nil {
		r.Nameservers = uniq(append(r.Nameservers, c.Nameservers...))
		r.Searches = uniq(append(r.Searches, c.Searches...))
		for _, o := range c.Options {
			opt := o.Name
			if o.Value != nil {
				opt += ":" + *o.Value
			}
			r.Options = setOption(r.Options, o.Name, opt)
		}
	}
	return r
}

func clone(s []string) []string { return append([]string(nil), s...) }

func uniq(s []string) []string {
	seen := map[string]bool{}
	out := s[:0:0]
	for _, v := range s {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}

// setOption replaces the option called name, or appends opt.
func setOption(opts []string, name, opt string) []string {
	for i, o := range opts {
		if n, _, _ := strings.Cut(o, ":"); n == name {
			opts[i] = opt
			return opts
		}
	}
	return append(opts, opt)
}

// podEtcDir is where iproute2 takes a network namespace's own /etc files: `ip netns exec NAME` bind-mounts
// each file of /etc/netns/NAME over /etc/<file>. Every container of a pod is started through
// `ip netns exec`, so a resolv.conf there is the pod's, and so is it for whatever runs in the pod later
// through `ip netns exec` (the lab's PodExec).
func (k *Kubelet) podEtcDir(netnsName string) string {
	return filepath.Join(k.cfg.NetnsEtcDir, netnsName)
}

// writePodResolvConf writes the pod's resolv.conf for `ip netns exec` (see podEtcDir).
func (k *Kubelet) writePodResolvConf(pod *corev1.Pod, netnsName string) error {
	host, err := os.ReadFile(k.cfg.ResolvConf)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("reading the node's resolv.conf: %w", err)
	}
	if errors.Is(err, os.ErrNotExist) {
		// `ip netns exec` only binds over a file that exists.
		if err := writeFileAtomic(k.cfg.ResolvConf, nil, 0o644); err != nil {
			return fmt.Errorf("creating the node's resolv.conf: %w", err)
		}
	}
	conf := podResolvConf(pod, dnsSettings{ClusterDNS: k.cfg.ClusterDNS, ClusterDomain: k.cfg.ClusterDomain, Host: parseResolvConf(host)})
	return writeFileAtomic(filepath.Join(k.podEtcDir(netnsName), "resolv.conf"), []byte(conf.String()), 0o644)
}

// removePodEtc removes what writePodResolvConf wrote.
func (k *Kubelet) removePodEtc(netnsName string) error { return os.RemoveAll(k.podEtcDir(netnsName)) }
