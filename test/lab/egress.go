package lab

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/ipvs-operator/ipvs-operator/test/lab/labd"
)

// egressProxy is the host's kube-apiserver's way into the cluster (its egress selector's "cluster"
// selection, controlplane.EgressSelectorConfiguration): an HTTP CONNECT proxy on a unix socket that sends
// each connection where its address lives. Loopback addresses are the host's own: the Nodes advertise
// 127.0.0.1:<port>, qemu's forward to their kubelet API, so the kubelet path is what it was without an
// egress selector. Every other address (pods, nodes' IPs) is inside the VM: the tunnel goes on through
// labd's CONNECT, which dials from the guest's root network namespace.
type egressProxy struct {
	srv    *http.Server
	socket string
	tmpDir string // set when the socket had to live outside the run directory
}

// maxSocketPath keeps a unix socket's path inside sun_path (108 bytes with its NUL on Linux).
const maxSocketPath = 100

// startEgressProxy serves the proxy on a socket in runDir (or a short temporary directory, should runDir's
// path be too long for a socket), tunnelling VM addresses through labd at labdAddr (host:port).
func startEgressProxy(runDir, labdAddr string) (*egressProxy, error) {
	e := &egressProxy{socket: filepath.Join(runDir, "egress.sock")}
	if len(e.socket) > maxSocketPath {
		d, err := os.MkdirTemp("", "lab-egress-")
		if err != nil {
			return nil, err
		}
		e.tmpDir, e.socket = d, filepath.Join(d, "egress.sock")
	}
	ln, err := net.Listen("unix", e.socket)
	if err != nil {
		_ = e.removeTmp()
		return nil, err
	}
	e.srv = &http.Server{Handler: labd.ConnectProxy{Dial: egressDial(labdAddr)}, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = e.srv.Serve(ln) }()
	return e, nil
}

// egressDial dials loopback addresses on the host and everything else through labd's CONNECT.
func egressDial(labdAddr string) func(ctx context.Context, address string) (net.Conn, error) {
	return func(ctx context.Context, address string) (net.Conn, error) {
		h, _, err := net.SplitHostPort(address)
		if err != nil {
			return nil, err
		}
		if ip, err := netip.ParseAddr(h); (err == nil && ip.IsLoopback()) || h == "localhost" {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", address)
		}
		return labd.DialConnect(ctx, labdAddr, address)
	}
}

// Socket is the unix socket the API server's egress selector names.
func (e *egressProxy) Socket() string { return e.socket }

// Close stops accepting connections; tunnels already open end with the API server or the VM.
func (e *egressProxy) Close() error {
	if e == nil {
		return nil
	}
	return errors.Join(e.srv.Close(), e.removeTmp())
}

func (e *egressProxy) removeTmp() error {
	if e.tmpDir == "" {
		return nil
	}
	return os.RemoveAll(e.tmpDir)
}
