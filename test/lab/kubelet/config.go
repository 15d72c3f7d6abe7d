// Package kubelet is a small kubelet for the lab VM, where each "node" is a network namespace: it registers
// its Node, gives every pod bound to it a network namespace on the node's pod bridge, runs the pod's
// containers as local processes (the project's own binaries, or the echo server for any other image), runs
// readiness and liveness probes for real, and reports pod status like a kubelet so that EndpointSlices,
// Services and the proxy under test see honest data.
package kubelet

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// ipString is ip in text, "" for nil (net.IP's String says "<nil>").
func ipString(ip net.IP) string {
	if ip == nil {
		return ""
	}
	return ip.String()
}

// KubeletVersion is what the Node reports as its kubelet version.
const KubeletVersion = "v1.37.1"

// DefaultMaxGracePeriod caps a deleted pod's grace period (Config.MaxGracePeriod): as long as the echo
// server's shutdown delay, and as long as a process that ignored SIGTERM lived before the lab kubelet sent
// SIGTERM at the start of the grace period (2 s unsignalled, then 1 s to SIGKILL).
const DefaultMaxGracePeriod = 3 * time.Second

// Config is what one lab kubelet needs to know about its node.
type Config struct {
	NodeName   string
	Kubeconfig string
	// APIServer overrides the server written into pods' kubeconfigs; the kubelet's own server by default.
	APIServer string
	NodeIP    net.IP
	PodCIDR   *net.IPNet
	// NodeIPv6 and PodCIDRv6 make the node dual-stack (both or neither): the Node gets both pod CIDRs and
	// InternalIPs, and every pod also an IPv6 address, the one of PodCIDRv6 with its IPv4 host part.
	NodeIPv6  net.IP
	PodCIDRv6 *net.IPNet
	// NoNodePodCIDR keeps PodCIDR off the Node object (spec.podCIDRs stays empty), as with CNIs that
	// allocate pod addresses themselves (Calico IPAM, Cilium cluster-pool, AWS VPC CNI); pods still get
	// their addresses from PodCIDR on the bridge.
	NoNodePodCIDR bool
	// Bridge is the pod bridge in the node's network namespace; its address is the pods' gateway.
	Bridge string
	// ImageMap maps a substring of an image to a directory of binaries: such a container runs
	// <dir>/<basename(command[0])>. Images matched by EchoImage are never mapped.
	ImageMap []ImageMapping
	// EchoImage is a substring that marks the echo image (runs the echo server even if ImageMap matches).
	EchoImage string
	// LabvmBinary is labvm itself: `labvm echo` serves echo containers, and `labvm container` gives mapped
	// binaries their volume mounts.
	LabvmBinary string
	// IPCommand is iproute2 (busybox's ip applet has no netns support).
	IPCommand string
	// NetnsPrefix starts every pod network namespace name: <prefix><namespace>-<name>.
	NetnsPrefix string
	// NetnsDir is where iproute2 keeps named network namespaces.
	NetnsDir string
	// HostMountNamespace, when set, is the mount namespace in which pod network namespaces are named, so that
	// they stay visible to other processes (the exec daemon, the next kubelet) even though `ip netns exec`
	// started this kubelet in a private mount namespace.
	HostMountNamespace string
	// StateDir keeps what this kubelet created (which network namespaces are its own) across restarts.
	StateDir string
	// PodDir holds per-pod files (service account token, kubeconfig).
	PodDir string
	// PodLogDir receives <namespace>_<pod>_<container>.log.
	PodLogDir string
	// HeartbeatInterval is the period of Node status and Lease updates.
	HeartbeatInterval time.Duration
	// MaxGracePeriod caps a deleted pod's grace period: its processes get SIGTERM when the deletion starts and
	// SIGKILL once the grace period (capped) is over. The default, 3 s, lets the echo server answer for its
	// whole shutdown delay (test/lab/echo.DefaultShutdownDelay).
	MaxGracePeriod time.Duration
	// StorageCheckInterval is how often the containers with an ephemeral-storage limit are measured (see
	// eviction.go); the kubelet's eviction manager looks every 10 s.
	StorageCheckInterval time.Duration
	// KillGracePeriod is the time between SIGTERM and SIGKILL when a process is stopped for another reason: a
	// failed liveness or startup probe, a kubelet stop, or a Pod object that vanished during its grace period.
	KillGracePeriod time.Duration
	// ClusterDNS and ClusterDomain are the kubelet's --cluster-dns and --cluster-domain: what a ClusterFirst
	// pod's resolv.conf names (see podResolvConf). Without ClusterDNS, pods get the node's resolv.conf.
	ClusterDNS    []net.IP
	ClusterDomain string
	// ResolvConf is the node's resolv.conf (dnsPolicy Default); NetnsEtcDir is iproute2's /etc/netns, where
	// each pod's resolv.conf is written.
	ResolvConf  string
	NetnsEtcDir string
	// Serve is where the kubelet API (exec, logs, port-forward) listens; no API when its Address is empty.
	Serve ServeOptions
	// AdvertiseAddress is IP:port where kube-apiserver reaches the kubelet API (through the VM's port
	// forward); the Node reports the IP as an ExternalIP address and the port as its kubelet endpoint.
	AdvertiseAddress string
}

// ImageMapping maps images containing Match to binaries in Dir.
type ImageMapping struct {
	Match string
	Dir   string
	// Entrypoint and Cmd are the image's ENTRYPOINT and CMD (see commandLine): upstream's e2e images
	// (agnhost) are run with args only.
	Entrypoint string
	Cmd        []string
}

// ParseImageMapping parses "match=dir" or "match=dir:entrypoint[:cmd]".
func ParseImageMapping(s string) (ImageMapping, error) {
	match, rest, ok := strings.Cut(s, "=")
	dir, image, _ := strings.Cut(rest, ":")
	if !ok || match == "" || dir == "" {
		return ImageMapping{}, fmt.Errorf("image mapping %q: want MATCH=DIR[:ENTRYPOINT[:CMD]]", s)
	}
	m := ImageMapping{Match: match, Dir: dir}
	if image != "" {
		entry, cmd, _ := strings.Cut(image, ":")
		m.Entrypoint = entry
		if cmd != "" {
			m.Cmd = []string{cmd}
		}
	}
	return m, nil
}

// WithDefaults fills what was left empty with the lab's values.
func (c Config) WithDefaults() Config {
	if c.Bridge == "" {
		c.Bridge = "cbr0"
	}
	if c.IPCommand == "" {
		c.IPCommand = "/usr/sbin/ip"
	}
	if c.NetnsPrefix == "" {
		c.NetnsPrefix = "pod-"
	}
	if c.NetnsDir == "" {
		c.NetnsDir = "/var/run/netns"
	}
	if c.StateDir == "" {
		c.StateDir = filepath.Join("/run/labvm-kubelet", c.NodeName)
	}
	if c.PodDir == "" {
		c.PodDir = filepath.Join(c.StateDir, "pods")
	}
	if c.PodLogDir == "" {
		c.PodLogDir = "/mnt/host/logs/pods"
	}
	if c.EchoImage == "" {
		c.EchoImage = "echo"
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = 10 * time.Second
	}
	if c.MaxGracePeriod == 0 {
		c.MaxGracePeriod = DefaultMaxGracePeriod
	}
	if c.StorageCheckInterval == 0 {
		c.StorageCheckInterval = 2 * time.Second
	}
	if c.KillGracePeriod == 0 {
		c.KillGracePeriod = time.Second
	}
	if c.ResolvConf == "" {
		c.ResolvConf = "/etc/resolv.conf"
	}
	if c.NetnsEtcDir == "" {
		c.NetnsEtcDir = "/etc/netns"
	}
	return c
}

// Validate reports a configuration the kubelet cannot run with.
func (c Config) Validate() error {
	var errs []error
	if c.NodeName == "" {
		errs = append(errs, errors.New("node name is required"))
	}
	if c.NodeIP == nil || c.NodeIP.To4() == nil {
		errs = append(errs, errors.New("an IPv4 node IP is required"))
	}
	if c.PodCIDR == nil || c.PodCIDR.IP.To4() == nil {
		errs = append(errs, errors.New("an IPv4 pod CIDR is required"))
	} else if ones, bits := c.PodCIDR.Mask.Size(); bits-ones < 2 {
		errs = append(errs, fmt.Errorf("pod CIDR %s is too small", c.PodCIDR))
	}
	if (c.NodeIPv6 == nil) != (c.PodCIDRv6 == nil) {
		errs = append(errs, errors.New("a dual-stack node needs both an IPv6 node IP and an IPv6 pod CIDR"))
	} else if c.PodCIDRv6 != nil {
		if c.NodeIPv6.To4() != nil || c.PodCIDRv6.IP.To4() != nil {
			errs = append(errs, errors.New("the second node IP and pod CIDR must be IPv6"))
		} else if c.PodCIDR != nil && hostBits(c.PodCIDRv6) < hostBits(c.PodCIDR) {
			errs = append(errs, fmt.Errorf("IPv6 pod CIDR %s has fewer addresses than %s", c.PodCIDRv6, c.PodCIDR))
		}
	}
	if c.LabvmBinary == "" {
		errs = append(errs, errors.New("the labvm binary is required"))
	}
	if c.AdvertiseAddress != "" {
		if _, _, err := advertisedEndpoint(c.AdvertiseAddress); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// advertisedEndpoint splits IP:port.
func advertisedEndpoint(s string) (string, int32, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, fmt.Errorf("advertise address %q: %w", s, err)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 || net.ParseIP(host) == nil {
		return "", 0, fmt.Errorf("advertise address %q: want IP:PORT", s)
	}
	return host, int32(p), nil
}
