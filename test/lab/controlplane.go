package lab

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// controllers are the kube-controller-manager controllers the lab runs: what Services, workloads and
// namespaces need, and the node lifecycle controller, which lifts the node.kubernetes.io/not-ready taint the
// API server puts on every new Node once the lab kubelet reports it Ready (without it nothing schedules).
// No pod CIDR allocation: the lab kubelet reports its own fixed ones.
var controllers = []string{
	"endpointslice-controller", "endpointslice-mirroring-controller", "endpoints-controller",
	"deployment-controller", "replicaset-controller", "daemonset-controller", "statefulset-controller",
	"job-controller", "namespace-controller", "garbage-collector-controller", "serviceaccount-controller",
	"serviceaccount-token-controller", "root-ca-certificate-publisher-controller",
	"clusterrole-aggregation-controller", "pod-garbage-collector-controller", "ttl-after-finished-controller",
	"disruption-controller", "service-cidr-controller", "node-lifecycle-controller",
	"certificatesigningrequest-signing-controller", "certificatesigningrequest-approving-controller",
}

// cpPorts are the control plane's ports on 127.0.0.1.
type cpPorts struct{ etcdClient, etcdPeer, api, kcm, scheduler int }

// controlPlane is etcd, kube-apiserver, kube-controller-manager and kube-scheduler on 127.0.0.1.
type controlPlane struct {
	dir       string
	logs      string
	pki       *pki
	apiPort   int
	etcd      *proc
	apiserver *proc
	kcm       *proc
	scheduler *proc
	// AdminKubeconfig is for the host (https://127.0.0.1:apiPort).
	adminKubeconfig string
	config          *rest.Config
}

func (cp *controlPlane) procs() []*proc {
	return []*proc{cp.etcd, cp.apiserver, cp.kcm, cp.scheduler}
}

// startControlPlane starts etcd and kube-apiserver, waits for the API server, then
// starts the controller manager and scheduler and waits for them too.
func startControlPlane(ctx context.Context, kubeBin, dir, logs string, p *pki, ports cpPorts) (_ *controlPlane, err error) {
	cp := &controlPlane{dir: dir, logs: logs, pki: p, apiPort: ports.api}
	defer func() {
		if err != nil {
			_ = cp.stop()
		}
	}()
	etcdClient, etcdPeer, apiPort, kcmPort, schedPort := ports.etcdClient, ports.etcdPeer, ports.api, ports.kcm, ports.scheduler
	cp.adminKubeconfig = filepath.Join(dir, "kubeconfig")
	if err := p.writeKubeconfig(cp.adminKubeconfig, fmt.Sprintf("https://127.0.0.1:%d", apiPort)); err != nil {
		return nil, err
	}
	bin := func(name string) string { return filepath.Join(kubeBin, name) }
	logf := func(name string) string { return filepath.Join(logs, name+".log") }

	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", etcdClient)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", etcdPeer)
	cp.etcd, err = startProc("etcd", logf("etcd"), []string{bin("etcd"),
		"--name=lab", "--data-dir=" + filepath.Join(dir, "etcd"),
		"--listen-client-urls=" + etcdURL, "--advertise-client-urls=" + etcdURL,
		"--listen-peer-urls=" + peerURL, "--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=lab=" + peerURL, "--initial-cluster-state=new",
		"--unsafe-no-fsync=true", "--log-level=warn", "--quota-backend-bytes=2147483648",
	}, nil)
	if err != nil {
		return nil, err
	}
	cp.apiserver, err = startProc("kube-apiserver", logf("kube-apiserver"), []string{bin("kube-apiserver"),
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1", "--secure-port=" + strconv.Itoa(apiPort),
		"--advertise-address=" + GuestAPIServerHost,
		"--tls-cert-file=" + p.serverCert, "--tls-private-key-file=" + p.serverKey,
		"--client-ca-file=" + p.caCert,
		// kubectl exec/logs/port-forward: the lab kubelets' Nodes advertise the VM's port forward on
		// 127.0.0.1 as their ExternalIP.
		"--kubelet-client-certificate=" + p.kubeletClientCert, "--kubelet-client-key=" + p.kubeletClientKey,
		"--kubelet-certificate-authority=" + p.caCert,
		"--kubelet-preferred-address-types=ExternalIP,InternalIP,Hostname",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + p.saPub, "--service-account-signing-key-file=" + p.saKey,
		"--service-cluster-ip-range=" + ServiceCIDRs(),
		"--authorization-mode=Node,RBAC",
		"--allow-privileged=true",
		"--enable-priority-and-fairness=false",
		"--profiling=false",
		"--endpoint-reconciler-type=lease",
		"--v=1",
	}, nil)
	if err != nil {
		return nil, err
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", cp.adminKubeconfig)
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = 100, 200
	cp.config = cfg
	if err := waitHTTPS(ctx, "kube-apiserver", cfg, "/readyz", 90*time.Second, []*proc{cp.etcd, cp.apiserver}); err != nil {
		return nil, err
	}
	authn := []string{"--kubeconfig=" + cp.adminKubeconfig, "--authentication-kubeconfig=" + cp.adminKubeconfig,
		"--authorization-kubeconfig=" + cp.adminKubeconfig, "--bind-address=127.0.0.1", "--leader-elect=false"}
	cp.kcm, err = startProc("kube-controller-manager", logf("kube-controller-manager"), append([]string{bin("kube-controller-manager"),
		"--secure-port=" + strconv.Itoa(kcmPort),
		"--controllers=" + strings.Join(controllers, ","),
		"--service-account-private-key-file=" + p.saKey,
		"--root-ca-file=" + p.caCert,
		"--cluster-signing-cert-file=" + p.caCert, "--cluster-signing-key-file=" + p.caKey,
		"--use-service-account-credentials=false",
		"--service-cluster-ip-range=" + ServiceCIDRs(),
		"--cluster-cidr=" + PodCIDRs(),
		"--profiling=false",
		"--v=1",
	}, authn...), nil)
	if err != nil {
		return nil, err
	}
	cp.scheduler, err = startProc("kube-scheduler", logf("kube-scheduler"), append([]string{bin("kube-scheduler"),
		"--secure-port=" + strconv.Itoa(schedPort),
		"--profiling=false",
		"--v=1",
	}, authn...), nil)
	if err != nil {
		return nil, err
	}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, c := range []struct {
		name string
		port int
	}{{"kube-controller-manager", kcmPort}, {"kube-scheduler", schedPort}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = waitHealthz(ctx, c.name, c.port, 60*time.Second, cp.procs())
		}()
	}
	wg.Wait()
	if err := errorsJoin(errs...); err != nil {
		return nil, err
	}
	return cp, nil
}

// waitHTTPS polls an authenticated GET on the API server until it answers 200.
func waitHTTPS(ctx context.Context, what string, cfg *rest.Config, path string, timeout time.Duration, watch []*proc) error {
	tr, err := rest.TransportFor(cfg)
	if err != nil {
		return err
	}
	hc := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	return waitFor(what, timeout, 100*time.Millisecond, watch, func() error {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		resp, err := hc.Get(cfg.Host + path)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s: %s", path, resp.Status, tail(string(body), 500))
		}
		return nil
	})
}

// waitHealthz polls a component's /healthz on 127.0.0.1 (an always-allowed path; its certificate is
// self-signed).
func waitHealthz(ctx context.Context, what string, port int, timeout time.Duration, watch []*proc) error {
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // our own component on loopback
	}}
	defer hc.CloseIdleConnections()
	url := fmt.Sprintf("https://127.0.0.1:%d/healthz", port)
	return waitFor(what, timeout, 200*time.Millisecond, watch, func() error {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		resp, err := hc.Get(url)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s", resp.Status)
		}
		return nil
	})
}

// stop stops the components in reverse order.
func (cp *controlPlane) stop() error {
	if cp == nil {
		return nil
	}
	var errs []error
	for _, p := range []*proc{cp.scheduler, cp.kcm, cp.apiserver, cp.etcd} {
		if p != nil {
			errs = append(errs, p.stop(5*time.Second))
		}
	}
	return errorsJoin(errs...)
}

// kubeBinaries are the control-plane binaries the lab needs.
var kubeBinaries = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"}

func missingKubeBinaries(dir string) []string {
	var missing []string
	for _, b := range kubeBinaries {
		if st, err := os.Stat(filepath.Join(dir, b)); err != nil || st.Mode()&0o111 == 0 {
			missing = append(missing, b)
		}
	}
	return missing
}
