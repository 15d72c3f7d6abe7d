// Command labvm is the lab VM's one static binary: the lab kubelet, the echo server and client that test
// pods run, and the guest exec daemon.
//
//	labvm kubelet --node NAME --kubeconfig FILE --node-ip IP --pod-cidr CIDR [--bridge cbr0] [--image-map MATCH=DIR]...
//	labvm echo [--name NAME] [--tcp PORTS] [--udp PORTS] [--sctp PORTS] [--shutdown-delay D]
//	labvm client [--proto http|tcp|udp|sctp] [--count N | --duration D] [--interval D] [--timeout D] [--hold D] [--source-port P] [--bearer-token T] ADDR
//	labvm lookup [--timeout D] NAME...   (prints each name's addresses, resolved as a Go program in the pod resolves them)
//	labvm labd --listen ADDR
//	labvm container [--bind SRC:DST[:ro]]... -- COMMAND...   (used by the kubelet for volume mounts)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/zapr"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/ipvs-operator/ipvs-operator/test/lab/echo"
	"github.com/ipvs-operator/ipvs-operator/test/lab/kubelet"
	"github.com/ipvs-operator/ipvs-operator/test/lab/labd"
)

// exitUsage is the exit status for bad flags or arguments.
const exitUsage = 2

func main() {
	if len(os.Args) < 2 {
		usage(os.Stderr)
		os.Exit(exitUsage)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var code int
	switch os.Args[1] {
	case "kubelet":
		code = runKubelet(ctx, os.Args[2:])
	case "echo":
		// The echo server tells SIGTERM from SIGINT itself (see runEcho).
		code = runEcho(os.Args[2:])
	case "client":
		code = runClient(ctx, os.Args[2:], os.Stdout)
	case "labd":
		code = runLabd(ctx, os.Args[2:])
	case "lookup":
		code = runLookup(ctx, os.Args[2:], os.Stdout)
	case kubelet.ContainerCommand:
		// Started by the lab kubelet: bind the container's volumes, then exec its process in place.
		err := kubelet.ExecInMountNamespace(os.Args[2:])
		fmt.Fprintf(os.Stderr, "labvm %s: %v\n", kubelet.ContainerCommand, err)
		code = 127
	case "help", "-h", "--help":
		usage(os.Stdout)
	default:
		fmt.Fprintf(os.Stderr, "labvm: unknown command %q\n", os.Args[1])
		usage(os.Stderr)
		code = exitUsage
	}
	os.Exit(code)
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: labvm kubelet|echo|client|labd [flags]   (labvm COMMAND -h for its flags)")
}

// newLogger logs key/value lines to path (appended) or to stderr.
func newLogger(path string, verbosity int) (logr.Logger, func(), error) {
	cfg := zap.NewDevelopmentConfig()
	cfg.Development = false
	cfg.DisableStacktrace = true
	cfg.Level = zap.NewAtomicLevelAt(zapcore.Level(-verbosity))
	cfg.EncoderConfig.EncodeTime = zapcore.RFC3339NanoTimeEncoder
	cfg.OutputPaths = []string{"stderr"}
	cfg.ErrorOutputPaths = []string{"stderr"}
	if path != "" {
		cfg.OutputPaths = []string{path}
	}
	z, err := cfg.Build()
	if err != nil {
		return logr.Discard(), func() {}, err
	}
	return zapr.NewLogger(z), func() { _ = z.Sync() }, nil
}

// stringList is a repeatable flag that also accepts comma-separated values.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// portList is a repeatable, comma-separated list of ports.
type portList []int

func (l *portList) String() string {
	s := make([]string, len(*l))
	for i, p := range *l {
		s[i] = strconv.Itoa(p)
	}
	return strings.Join(s, ",")
}

func (l *portList) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		p, err := strconv.Atoi(s)
		if err != nil || p < 1 || p > 65535 {
			return fmt.Errorf("bad port %q", s)
		}
		*l = append(*l, p)
	}
	return nil
}

func runKubelet(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("kubelet", flag.ContinueOnError)
	var (
		cfg                      kubelet.Config
		nodeIP, podCIDR, logPath string
		imageMap, clusterDNS     stringList
		verbosity                int
	)
	fs.StringVar(&cfg.NodeName, "node", "", "node name (required)")
	fs.StringVar(&cfg.Kubeconfig, "kubeconfig", "/mnt/host/kubeconfig-guest", "kubeconfig of the kubelet")
	fs.StringVar(&cfg.APIServer, "api-server", "", "API server URL written into pods' kubeconfigs (default: the kubeconfig's)")
	fs.StringVar(&nodeIP, "node-ip", "", "node IP (required); IPV4,IPV6 for a dual-stack node")
	fs.StringVar(&podCIDR, "pod-cidr", "", "the node's pod CIDR (required); IPV4,IPV6 for a dual-stack node")
	fs.StringVar(&cfg.Bridge, "bridge", "cbr0", "pod bridge in the node's network namespace")
	fs.BoolVar(&cfg.NoNodePodCIDR, "no-node-pod-cidr", false, "leave the Node's spec.podCIDRs empty (pods still use --pod-cidr)")
	fs.Var(&imageMap, "image-map", "MATCH=DIR: images containing MATCH run DIR/<basename of command[0]> (repeatable)")
	fs.StringVar(&cfg.EchoImage, "echo-image", "echo", "images whose repository name contains this run the echo server")
	fs.StringVar(&cfg.LabvmBinary, "labvm", "", "labvm binary run for echo containers and volume mounts (default: this binary)")
	fs.StringVar(&cfg.IPCommand, "ip", "/usr/sbin/ip", "iproute2 ip command")
	fs.StringVar(&cfg.NetnsPrefix, "netns-prefix", "pod-", "prefix of pod network namespace names")
	fs.StringVar(&cfg.HostMountNamespace, "host-mount-ns", "/proc/1/ns/mnt", "mount namespace where pod network namespaces are named (empty: own)")
	fs.StringVar(&cfg.StateDir, "state-dir", "", "kubelet state (default /run/labvm-kubelet/NODE)")
	fs.StringVar(&cfg.PodDir, "pod-dir", "", "per-pod files: token, kubeconfig (default STATE-DIR/pods)")
	fs.StringVar(&cfg.PodLogDir, "pod-log-dir", "/mnt/host/logs/pods", "container logs: NAMESPACE_POD_CONTAINER.log")
	fs.DurationVar(&cfg.HeartbeatInterval, "heartbeat", 10*time.Second, "node status and lease period")
	fs.DurationVar(&cfg.MaxGracePeriod, "max-grace-period", kubelet.DefaultMaxGracePeriod, "a deleted pod's grace period at most: SIGTERM when its deletion starts, SIGKILL after this")
	fs.Var(&clusterDNS, "cluster-dns", "DNS server IPs of the cluster, for pods' ClusterFirst resolv.conf (comma-separated)")
	fs.StringVar(&cfg.ClusterDomain, "cluster-domain", "cluster.local", "the cluster's DNS domain")
	fs.StringVar(&cfg.ResolvConf, "resolv-conf", "/etc/resolv.conf", "the node's resolv.conf (dnsPolicy Default)")
	fs.StringVar(&cfg.Serve.Address, "serve", "", "address of the kubelet API (exec, logs, port-forward); empty: none")
	fs.StringVar(&cfg.Serve.Netns, "serve-netns", "", "network namespace to listen in (e.g. /proc/1/ns/net; default: own)")
	fs.StringVar(&cfg.Serve.CertFile, "tls-cert-file", "", "kubelet API serving certificate")
	fs.StringVar(&cfg.Serve.KeyFile, "tls-private-key-file", "", "kubelet API serving key")
	fs.StringVar(&cfg.Serve.ClientCAFile, "client-ca-file", "", "CA that signs the API server's kubelet client certificate")
	fs.StringVar(&cfg.AdvertiseAddress, "advertise-address", "", "IP:PORT where kube-apiserver reaches the kubelet API")
	fs.StringVar(&logPath, "log", "", "log file (default stderr)")
	fs.IntVar(&verbosity, "v", 0, "log verbosity")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	for _, s := range clusterDNS {
		ip := net.ParseIP(s)
		if ip == nil {
			fmt.Fprintf(os.Stderr, "kubelet: bad --cluster-dns %q\n", s)
			return exitUsage
		}
		cfg.ClusterDNS = append(cfg.ClusterDNS, ip)
	}
	// As a kubelet's --node-ip: one address, or an IPv4,IPv6 pair for a dual-stack node.
	ip4, ip6, _ := strings.Cut(nodeIP, ",")
	if cfg.NodeIP = net.ParseIP(ip4); cfg.NodeIP == nil {
		fmt.Fprintf(os.Stderr, "kubelet: bad or missing --node-ip %q\n", nodeIP)
		return exitUsage
	}
	if ip6 != "" {
		if cfg.NodeIPv6 = net.ParseIP(ip6); cfg.NodeIPv6 == nil {
			fmt.Fprintf(os.Stderr, "kubelet: bad --node-ip %q\n", nodeIP)
			return exitUsage
		}
	}
	cidr4, cidr6, _ := strings.Cut(podCIDR, ",")
	_, cidr, err := net.ParseCIDR(cidr4)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kubelet: bad or missing --pod-cidr %q\n", podCIDR)
		return exitUsage
	}
	cfg.PodCIDR = cidr
	if cidr6 != "" {
		if _, cfg.PodCIDRv6, err = net.ParseCIDR(cidr6); err != nil {
			fmt.Fprintf(os.Stderr, "kubelet: bad --pod-cidr %q\n", podCIDR)
			return exitUsage
		}
	}
	for _, m := range imageMap {
		mapping, err := kubelet.ParseImageMapping(m)
		if err != nil {
			fmt.Fprintf(os.Stderr, "kubelet: %v\n", err)
			return exitUsage
		}
		cfg.ImageMap = append(cfg.ImageMap, mapping)
	}
	if cfg.LabvmBinary == "" {
		if cfg.LabvmBinary, err = os.Executable(); err != nil {
			fmt.Fprintf(os.Stderr, "kubelet: finding own binary: %v\n", err)
			return 1
		}
	}
	log, flush, err := newLogger(logPath, verbosity)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kubelet: logger: %v\n", err)
		return 1
	}
	defer flush()
	if err := kubelet.Run(logr.NewContext(ctx, log), cfg); err != nil && !errors.Is(err, context.Canceled) {
		log.Error(err, "Lab kubelet failed")
		return 1
	}
	return 0
}

func runEcho(args []string) int {
	fs := flag.NewFlagSet("echo", flag.ContinueOnError)
	var cfg echo.Config
	var tcp, udp, sctp portList
	fs.StringVar(&cfg.Name, "name", "", "answer to every request (default $POD_NAME, then the hostname)")
	fs.Var(&tcp, "tcp", "TCP ports: HTTP or line protocol, detected per connection (comma-separated, repeatable)")
	fs.Var(&udp, "udp", "UDP ports (comma-separated, repeatable)")
	fs.Var(&sctp, "sctp", "SCTP ports, served as the TCP ones (comma-separated, repeatable)")
	fs.DurationVar(&cfg.ShutdownDelay, "shutdown-delay", echo.DefaultShutdownDelay,
		"keep answering this long after SIGTERM, as a pod does while its endpoint is taken out of rotation (SIGINT or a second SIGTERM stops at once)")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "echo: unexpected arguments %q\n", fs.Args())
		return exitUsage
	}
	cfg.TCP, cfg.UDP, cfg.SCTP = tcp, udp, sctp
	log, flush, err := newLogger("", 0)
	if err != nil {
		return 1
	}
	defer flush()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	ctx, shutdown := echoStops(sigs)
	cfg.Shutdown = shutdown
	if err := echo.Serve(logr.NewContext(ctx, log), cfg); err != nil {
		log.Error(err, "Echo server failed")
		return 1
	}
	return 0
}

// echoStops turns signals into the echo server's two ways to stop: the first SIGTERM (what a kubelet sends)
// closes shutdown, so the server answers for its shutdown delay; SIGINT (Ctrl-C), or any signal after that,
// cancels ctx, so it stops at once. agnhost netexec does the same with --delay-shutdown.
func echoStops(sigs <-chan os.Signal) (context.Context, <-chan struct{}) {
	ctx, cancel := context.WithCancel(context.Background())
	shutdown := make(chan struct{})
	go func() {
		defer cancel()
		if s := <-sigs; s != syscall.SIGTERM {
			return
		}
		close(shutdown)
		<-sigs
	}()
	return ctx, shutdown
}

func runClient(ctx context.Context, args []string, out io.Writer) int {
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	var cfg echo.ClientConfig
	proto := fs.String("proto", "http", "http, tcp, udp or sctp (the tcp line protocol over SCTP)")
	fs.IntVar(&cfg.Count, "count", 1, "number of requests (connections with --hold)")
	fs.DurationVar(&cfg.Interval, "interval", 0, "pause between requests")
	fs.DurationVar(&cfg.Duration, "duration", 0, "send requests until this much time has passed (instead of --count)")
	fs.DurationVar(&cfg.Timeout, "timeout", 2*time.Second, "per-request timeout")
	fs.DurationVar(&cfg.Hold, "hold", 0, "tcp/sctp: open --count connections, keep all of them open this long, then close")
	fs.IntVar(&cfg.SourcePort, "source-port", 0, "tcp/udp/sctp: bind this local port (a UDP flow keeps its identity)")
	fs.StringVar(&cfg.BearerToken, "bearer-token", "", "http: send this bearer token (https:// addresses are fetched without verifying the certificate)")
	fs.SetOutput(os.Stderr)
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "client: exactly one ADDR (host:port, or for http a URL or host:port/path) is required")
		return exitUsage
	}
	cfg.Proto, cfg.Addr = echo.Protocol(*proto), fs.Arg(0)
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(os.Stderr, "client: %v\n", err)
		return exitUsage
	}
	cfg.OnResult = func(r echo.Result) { fmt.Fprintln(out, r.String()) }
	results := echo.Client(ctx, cfg)
	if err := results.WriteSummary(out); err != nil {
		return 1
	}
	return 0
}

func runLabd(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("labd", flag.ContinueOnError)
	listen := fs.String("listen", "10.0.2.15:7000", "address of the exec daemon")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if err := labd.Serve(ctx, *listen); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintf(os.Stderr, "labd: %v\n", err)
		return 1
	}
	return 0
}

// runLookup resolves each name with the resolver every Go program in a pod uses (/etc/resolv.conf, its
// search path and ndots) and prints "NAME ADDR[,ADDR...]"; a name that does not resolve fails the command.
// --timeout bounds each name (default 5 s, the resolver's own wait for one answer: a lost query then fails
// the name; above 5 s the resolver sends it again, as a libc resolver does).
func runLookup(ctx context.Context, args []string, out io.Writer) int {
	fs := flag.NewFlagSet("lookup", flag.ContinueOnError)
	timeout := fs.Duration("timeout", 5*time.Second, "how long each name may take")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	names := fs.Args()
	if len(names) == 0 {
		fmt.Fprintln(os.Stderr, "usage: labvm lookup [--timeout D] NAME...")
		return exitUsage
	}
	code := 0
	for _, name := range names {
		lctx, cancel := context.WithTimeout(ctx, *timeout)
		addrs, err := net.DefaultResolver.LookupHost(lctx, name)
		cancel()
		if err != nil {
			fmt.Fprintf(os.Stderr, "lookup %s: %v\n", name, err)
			code = 1
			continue
		}
		fmt.Fprintf(out, "%s %s\n", name, strings.Join(addrs, ","))
	}
	return code
}
