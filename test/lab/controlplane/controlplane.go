// Package controlplane runs the lab's etcd, kube-apiserver, kube-controller-manager and kube-scheduler on
// the host's 127.0.0.1, with the lab's certificates (package pki) and ranges (package topology).
package controlplane

import (
	"context"
	"crypto/tls"
	"errors"
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

	"github.com/ipvs-operator/ipvs-operator/test/lab/host"
	"github.com/ipvs-operator/ipvs-operator/test/lab/pki"
	"github.com/ipvs-operator/ipvs-operator/test/lab/topology"
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

// Ports are the control plane's ports on 127.0.0.1.
type Ports struct{ EtcdClient, EtcdPeer, API, KCM, Scheduler int }

// ControlPlane is etcd, kube-apiserver, kube-controller-manager and kube-scheduler on 127.0.0.1.
type ControlPlane struct {
	dir             string
	logs            string
	pki             *pki.PKI
	apiPort         int
	etcd            *host.Proc
	apiserver       *host.Proc
	kcm             *host.Proc
	scheduler       *host.Proc
	adminKubeconfig string
	config          *rest.Config
}

// Procs are its processes, for callers that watch them.
func (cp *ControlPlane) Procs() []*host.Proc {
	return []*host.Proc{cp.etcd, cp.apiserver, cp.kcm, cp.scheduler}
}

// Start starts etcd and kube-apiserver, waits for the API server, then
// starts the controller manager and scheduler and waits for them too. egressUDS, when set, is the unix
// socket of the HTTP CONNECT proxy the API server reaches the cluster through (EgressSelectorConfiguration).
func Start(ctx context.Context, kubeBin, dir, logs string, p *pki.PKI, ports Ports, egressUDS string) (_ *ControlPlane, err error) {
	cp := &ControlPlane{dir: dir, logs: logs, pki: p, apiPort: ports.API}
	defer func() {
		if err != nil {
			_ = cp.Stop()
		}
	}()
	etcdClient, etcdPeer, apiPort, kcmPort, schedPort := ports.EtcdClient, ports.EtcdPeer, ports.API, ports.KCM, ports.Scheduler
	cp.adminKubeconfig = filepath.Join(dir, "kubeconfig")
	if err := p.WriteKubeconfig(cp.adminKubeconfig, fmt.Sprintf("https://127.0.0.1:%d", apiPort)); err != nil {
		return nil, err
	}
	bin := func(name string) string { return filepath.Join(kubeBin, name) }
	logf := func(name string) string { return filepath.Join(logs, name+".log") }

	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", etcdClient)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", etcdPeer)
	cp.etcd, err = host.Start("etcd", logf("etcd"), []string{bin("etcd"),
		"--name=lab", "--data-dir=" + filepath.Join(dir, "etcd"),
		"--listen-client-urls=" + etcdURL, "--advertise-client-urls=" + etcdURL,
		"--listen-peer-urls=" + peerURL, "--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=lab=" + peerURL, "--initial-cluster-state=new",
		"--unsafe-no-fsync=true", "--log-level=warn", "--quota-backend-bytes=2147483648",
	}, nil)
	if err != nil {
		return nil, err
	}
	var egressArgs []string
	if egressUDS != "" {
		conf, err := EgressSelectorConfiguration(egressUDS)
		if err != nil {
			return nil, err
		}
		path := filepath.Join(dir, "egress-selector.yaml")
		if err := host.WriteFileAtomic(path, conf); err != nil {
			return nil, err
		}
		egressArgs = []string{"--egress-selector-config-file=" + path}
	}
	cp.apiserver, err = host.Start("kube-apiserver", logf("kube-apiserver"), append([]string{bin("kube-apiserver"),
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1", "--secure-port=" + strconv.Itoa(apiPort),
		"--advertise-address=" + topology.GuestAPIServerHost,
		"--tls-cert-file=" + p.ServerCert, "--tls-private-key-file=" + p.ServerKey,
		"--client-ca-file=" + p.CACert,
		// kubectl exec/logs/port-forward: the lab kubelets' Nodes advertise the VM's port forward on
		// 127.0.0.1 as their ExternalIP (with an egress selector, its proxy dials loopback directly).
		"--kubelet-client-certificate=" + p.KubeletClientCert, "--kubelet-client-key=" + p.KubeletClientKey,
		"--kubelet-certificate-authority=" + p.CACert,
		"--kubelet-preferred-address-types=ExternalIP,InternalIP,Hostname",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + p.SAPub, "--service-account-signing-key-file=" + p.SAKey,
		"--service-cluster-ip-range=" + topology.ServiceCIDRs(),
		"--authorization-mode=Node,RBAC",
		"--allow-privileged=true",
		"--enable-priority-and-fairness=false",
		"--profiling=false",
		"--endpoint-reconciler-type=lease",
		"--v=1",
	}, egressArgs...), nil)
	if err != nil {
		return nil, err
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", cp.adminKubeconfig)
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = 100, 200
	cp.config = cfg
	if err := waitHTTPS(ctx, "kube-apiserver", cfg, "/readyz", 90*time.Second, []*host.Proc{cp.etcd, cp.apiserver}); err != nil {
		return nil, err
	}
	authn := []string{"--kubeconfig=" + cp.adminKubeconfig, "--authentication-kubeconfig=" + cp.adminKubeconfig,
		"--authorization-kubeconfig=" + cp.adminKubeconfig, "--bind-address=127.0.0.1", "--leader-elect=false"}
	cp.kcm, err = host.Start("kube-controller-manager", logf("kube-controller-manager"), append([]string{bin("kube-controller-manager"),
		"--secure-port=" + strconv.Itoa(kcmPort),
		"--controllers=" + strings.Join(controllers, ","),
		"--service-account-private-key-file=" + p.SAKey,
		"--root-ca-file=" + p.CACert,
		"--cluster-signing-cert-file=" + p.CACert, "--cluster-signing-key-file=" + p.CAKey,
		"--use-service-account-credentials=false",
		"--service-cluster-ip-range=" + topology.ServiceCIDRs(),
		"--cluster-cidr=" + topology.PodCIDRs(),
		"--profiling=false",
		"--v=1",
	}, authn...), nil)
	if err != nil {
		return nil, err
	}
	cp.scheduler, err = host.Start("kube-scheduler", logf("kube-scheduler"), append([]string{bin("kube-scheduler"),
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
			errs[i] = waitHealthz(ctx, c.name, c.port, 60*time.Second, cp.Procs())
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return cp, nil
}

// AdminKubeconfig is the admin kubeconfig for the host (https://127.0.0.1:<API port>).
func (cp *ControlPlane) AdminKubeconfig() string { return cp.adminKubeconfig }

// Config is the admin client configuration of AdminKubeconfig.
func (cp *ControlPlane) Config() *rest.Config { return cp.config }

// waitHTTPS polls an authenticated GET on the API server until it answers 200.
func waitHTTPS(ctx context.Context, what string, cfg *rest.Config, path string, timeout time.Duration, watch []*host.Proc) error {
	tr, err := rest.TransportFor(cfg)
	if err != nil {
		return err
	}
	hc := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	return host.WaitFor(what, timeout, 100*time.Millisecond, watch, func() error {
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
			return fmt.Errorf("%s: %s: %s", path, resp.Status, host.Tail(string(body), 500))
		}
		return nil
	})
}

// waitHealthz polls a component's /healthz on 127.0.0.1 (an always-allowed path; its certificate is
// self-signed).
func waitHealthz(ctx context.Context, what string, port int, timeout time.Duration, watch []*host.Proc) error {
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // our own component on loopback
	}}
	defer hc.CloseIdleConnections()
	url := fmt.Sprintf("https://127.0.0.1:%d/healthz", port)
	return host.WaitFor(what, timeout, 200*time.Millisecond, watch, func() error {
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

// Stop stops the components in reverse order.
func (cp *ControlPlane) Stop() error {
	if cp == nil {
		return nil
	}
	var errs []error
	for _, p := range []*host.Proc{cp.scheduler, cp.kcm, cp.apiserver, cp.etcd} {
		if p != nil {
			errs = append(errs, p.Stop(5*time.Second))
		}
	}
	return errors.Join(errs...)
}

// KubeBinaries are the control-plane binaries the lab needs.
var KubeBinaries = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"}

// MissingKubeBinaries are the KubeBinaries not executable in dir.
func MissingKubeBinaries(dir string) []string {
	var missing []string
	for _, b := range KubeBinaries {
		if st, err := os.Stat(filepath.Join(dir, b)); err != nil || st.Mode()&0o111 == 0 {
			missing = append(missing, b)
		}
	}
	return missing
}
