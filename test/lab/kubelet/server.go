package kubelet

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/vishvananda/netns"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/cri-streaming/pkg/streaming/portforward"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
)

// The kubelet API as kube-apiserver calls it for `kubectl exec`, `kubectl logs` and `kubectl port-forward`
// (the paths of pkg/kubelet/server in Kubernetes). The streaming protocols (SPDY, and websockets for clients
// that speak them directly) are the kubelet's own code, k8s.io/cri-streaming; this file only routes requests
// to the lab's pods.

// streamIdleTimeout and streamCreationTimeout are the kubelet's defaults (--streaming-connection-idle-timeout
// is 4 h there; a lab needs no stream that long).
const (
	streamIdleTimeout     = 30 * time.Minute
	streamCreationTimeout = remotecommand.DefaultStreamCreationTimeout
)

// podRuntime is what the kubelet API needs from the node's pods (the Kubelet, or a fake in tests). Pod names
// in the streaming interfaces are "namespace/name".
type podRuntime interface {
	remotecommand.Executor
	portforward.PortForwarder
	// ContainerLog returns the log file of a container, the pod's UID, and a function that reports whether
	// the container's pod is still running on this node (a followed log ends when it is not).
	ContainerLog(namespace, pod, container string) (path string, uid types.UID, alive func() bool, err error)
	// PodUID returns the UID of a pod running on this node.
	PodUID(namespace, pod string) (types.UID, error)
}

// errPodNotFound and errContainerNotFound are answered with 404.
var (
	errPodNotFound       = errors.New("pod not found on this node")
	errContainerNotFound = errors.New("container not found in pod")
)

// podKey joins namespace and name as the streaming interfaces carry them.
func podKey(namespace, name string) string { return namespace + "/" + name }

func splitPodKey(key string) (string, string) {
	ns, name, _ := strings.Cut(key, "/")
	return ns, name
}

// apiHandler serves the kubelet API paths the API server proxies to.
func apiHandler(rt podRuntime, log logr.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	execHandler := func(w http.ResponseWriter, r *http.Request) {
		ns, pod, ctr := r.PathValue("ns"), r.PathValue("pod"), r.PathValue("container")
		uid, ok := checkUID(w, rt, ns, pod, r.PathValue("uid"))
		if !ok {
			return
		}
		opts, err := remotecommand.NewOptions(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		cmd := r.URL.Query()["command"]
		if len(cmd) == 0 {
			http.Error(w, "missing command", http.StatusBadRequest)
			return
		}
		log.V(1).Info("Exec", "pod", podKey(ns, pod), "container", ctr, "command", cmd)
		remotecommand.ServeExec(w, r, rt, podKey(ns, pod), string(uid), ctr, cmd, opts,
			streamIdleTimeout, streamCreationTimeout, remotecommand.SupportedStreamingProtocols)
	}
	for _, p := range []string{"/exec/{ns}/{pod}/{container}", "/exec/{ns}/{pod}/{uid}/{container}"} {
		mux.HandleFunc("GET "+p, execHandler)
		mux.HandleFunc("POST "+p, execHandler)
	}
	pfHandler := func(w http.ResponseWriter, r *http.Request) {
		ns, pod := r.PathValue("ns"), r.PathValue("pod")
		uid, ok := checkUID(w, rt, ns, pod, r.PathValue("uid"))
		if !ok {
			return
		}
		opts, err := portforward.NewV4Options(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		log.V(1).Info("Port-forward", "pod", podKey(ns, pod))
		portforward.ServePortForward(w, r, rt, podKey(ns, pod), string(uid), opts,
			streamIdleTimeout, streamCreationTimeout, portforward.SupportedProtocols)
	}
	for _, p := range []string{"/portForward/{ns}/{pod}", "/portForward/{ns}/{pod}/{uid}"} {
		mux.HandleFunc("GET "+p, pfHandler)
		mux.HandleFunc("POST "+p, pfHandler)
	}
	mux.HandleFunc("GET /containerLogs/{ns}/{pod}/{container}", func(w http.ResponseWriter, r *http.Request) {
		serveContainerLogs(w, r, rt)
	})
	return mux
}

// checkUID finds the pod and, when the path names a UID, checks that it is this pod's (a request for a pod
// that was replaced under the same name must not reach the new one).
func checkUID(w http.ResponseWriter, rt podRuntime, ns, pod, want string) (types.UID, bool) {
	uid, err := rt.PodUID(ns, pod)
	if err == nil && want != "" && types.UID(want) != uid {
		err = fmt.Errorf("%w: pod %s has UID %s, not %s", errPodNotFound, podKey(ns, pod), uid, want)
	}
	if err != nil {
		writeError(w, err)
		return "", false
	}
	return uid, true
}

func writeError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, errPodNotFound) || errors.Is(err, errContainerNotFound):
		code = http.StatusNotFound
	case errors.Is(err, errNoPrevious):
		// As the kubelet: a log that cannot be given is a bad request, whose message kubectl shows.
		code = http.StatusBadRequest
	}
	http.Error(w, err.Error(), code)
}

// logOptions are the query parameters of /containerLogs that the lab honours.
type logOptions struct {
	Follow     bool
	Previous   bool
	TailLines  int // -1: all
	LimitBytes int64
}

func parseLogOptions(r *http.Request) (logOptions, error) {
	q := r.URL.Query()
	o := logOptions{TailLines: -1}
	var err error
	parseBool := func(name string) bool {
		v := q.Get(name)
		if v == "" {
			return false
		}
		b, e := strconv.ParseBool(v)
		if e != nil && err == nil {
			err = fmt.Errorf("bad %s %q", name, v)
		}
		return b
	}
	o.Follow, o.Previous = parseBool("follow"), parseBool("previous")
	if v := q.Get("tailLines"); v != "" {
		n, e := strconv.Atoi(v)
		if e != nil || n < 0 {
			return o, fmt.Errorf("bad tailLines %q", v)
		}
		o.TailLines = n
	}
	if v := q.Get("limitBytes"); v != "" {
		n, e := strconv.ParseInt(v, 10, 64)
		if e != nil || n < 1 {
			return o, fmt.Errorf("bad limitBytes %q", v)
		}
		o.LimitBytes = n
	}
	if o.Follow && o.Previous {
		return o, errors.New("follow and previous cannot be combined")
	}
	return o, err
}

// ServeOptions is how the kubelet API is served.
type ServeOptions struct {
	// Address is host:port to listen on; empty serves nothing.
	Address string
	// Netns is the network namespace to listen in (a path such as /proc/1/ns/net); empty: the kubelet's own.
	// The lab's host forwards a port to the guest's root namespace, not to a node's.
	Netns string
	// CertFile and KeyFile are the serving certificate; ClientCAFile verifies callers (the API server's
	// kubelet client certificate).
	CertFile, KeyFile, ClientCAFile string
}

// serverTLS requires a client certificate from the lab CA, as a kubelet with
// --client-ca-file and --anonymous-auth=false does.
func serverTLS(o ServeOptions) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("kubelet serving certificate: %w", err)
	}
	caPEM, err := os.ReadFile(o.ClientCAFile)
	if err != nil {
		return nil, fmt.Errorf("kubelet client CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("kubelet client CA %s: no certificate", o.ClientCAFile)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
		// SPDY upgrades need HTTP/1.1.
		NextProtos: []string{"http/1.1"},
	}, nil
}

// listenIn opens a TCP listener in the network namespace at nsPath (the current one if empty). A socket
// stays in the namespace it was created in, so the listener works after the thread switches back.
func listenIn(nsPath, address string) (net.Listener, error) {
	if nsPath == "" {
		return net.Listen("tcp", address)
	}
	var l net.Listener
	err := runInNetns(nsPath, func() error {
		var err error
		l, err = net.Listen("tcp", address)
		return err
	})
	return l, err
}

// runInNetns runs fn on a locked OS thread switched into the network namespace at nsPath. If switching back
// fails, the thread stays locked and Go discards it when the goroutine ends.
func runInNetns(nsPath string, fn func() error) error {
	target, err := netns.GetFromPath(nsPath)
	if err != nil {
		return fmt.Errorf("opening network namespace %s: %w", nsPath, err)
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("entering network namespace %s: %w", nsPath, err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, err) // thread stays locked: discarded
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// serveAPI serves the kubelet API until ctx ends.
func serveAPI(ctx context.Context, o ServeOptions, rt podRuntime, log logr.Logger) error {
	tlsConfig, err := serverTLS(o)
	if err != nil {
		return err
	}
	l, err := listenIn(o.Netns, o.Address)
	if err != nil {
		return fmt.Errorf("kubelet API listener on %s: %w", o.Address, err)
	}
	log.Info("Serving the kubelet API", "address", o.Address, "netns", o.Netns)
	return serveOn(ctx, l, tlsConfig, apiHandler(rt, log))
}

// serveOn serves handler over TLS on l until ctx ends.
func serveOn(ctx context.Context, l net.Listener, tlsConfig *tls.Config, handler http.Handler) error {
	srv := &http.Server{Handler: handler, TLSConfig: tlsConfig, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		shutCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutCtx)
		_ = srv.Close() // hijacked streaming connections are not closed by Shutdown
	}()
	if err := srv.Serve(tls.NewListener(l, tlsConfig)); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
