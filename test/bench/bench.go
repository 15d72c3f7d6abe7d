//go:build lab

// Package bench is the scale harness (`make bench`): it writes N selector-less Services x M endpoints
// (EndpointSlices written directly, no pods) to the lab's API server, runs a proxy on one lab node, and
// measures it from outside: the kernel as seen from the node (`benchvm watch` in the node's network
// namespace), the API write times on the host, the proxy's CPU and memory from the guest's /proc, and its
// audits from its metrics. The same objects programmed by a plain netlink loop in a fresh namespace of the
// same VM (`benchvm raw`) are the limit every proxy is compared with.
package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/ipvs-operator/ipvs-operator/test/lab"
)

// Config sizes a run.
type Config struct {
	// Services x Endpoints are written (BENCH_SERVICES, BENCH_ENDPOINTS).
	Services, Endpoints int
	// Flips single endpoint flips, one at a time, spread over FlipAudits audit periods.
	Flips      int
	FlipAudits int
	// Burst flips on as many Services are written at once.
	Burst int
	// AuditPeriod is given to the proxy (BENCH_AUDIT_PERIOD; the agent's default is a minute).
	AuditPeriod time.Duration
	// Idle is how long CPU is sampled with nothing changing.
	Idle time.Duration
	// Node runs the proxy; the lab's other node stays empty.
	Node string
	// DataPath is how long requests run through the data path's ClusterIP (0: not measured).
	DataPath time.Duration
	// Writers write objects concurrently.
	Writers int
	// Log receives progress.
	Log io.Writer
}

// Layout of the objects: the i-th Service's ClusterIP is vipBase+i, its j-th endpoint dstBase+i*M+j.
var (
	vipBase   = netip.MustParseAddr("10.96.64.1")
	vipPrefix = netip.MustParsePrefix("10.96.64.0/18")
	dstBase   = netip.MustParseAddr("10.244.16.1")
)

const (
	namespace  = "bench"
	port       = 80
	targetPort = 8080
)

func nth(base netip.Addr, i int) netip.Addr {
	b := base.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += uint32(i)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func serviceName(i int) string { return fmt.Sprintf("s%05d", i) }

// objects renders the i-th Service and its EndpointSlice.
func objects(i, m int) (*corev1.Service, *discoveryv1.EndpointSlice) {
	name := serviceName(i)
	svc := &corev1.Service{
		// No service-proxy-name label: kube-proxy serves only unlabelled Services, the agent runs with
		// --scope=all.
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec: corev1.ServiceSpec{
			ClusterIP: nth(vipBase, i).String(),
			Ports: []corev1.ServicePort{{Name: "http", Port: port, Protocol: corev1.ProtocolTCP,
				TargetPort: intstr.FromInt32(targetPort)}},
		},
	}
	eps := make([]discoveryv1.Endpoint, m)
	for j := range eps {
		eps[j] = discoveryv1.Endpoint{Addresses: []string{nth(dstBase, i*m+j).String()},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name + "-bench", Labels: map[string]string{
			discoveryv1.LabelServiceName: name,
			discoveryv1.LabelManagedBy:   "bench.ipvs-operator.dev",
		}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   eps,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](targetPort), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	return svc, slice
}

// Harness holds the objects written to one lab.
type Harness struct {
	lab    *lab.Lab
	cfg    Config
	c      client.Client
	slices []*discoveryv1.EndpointSlice
	ready  []bool // of endpoint 0 of each Service
	token  string
	// flipPolls are the watcher's polling rounds at the single flips of the run under way (see flip).
	flipPolls []time.Duration

	// Writes is the time writing the objects took, RawLoop the limit.
	Writes  time.Duration
	RawLoop RawResult

	// dp are the data path's pods; DataPathLimit is the client straight to a backend pod (datapath.go).
	dp            dataPathPods
	DataPathLimit DataPath
}

// RawResult is `benchvm raw`'s output.
type RawResult struct {
	Services     int     `json:"services"`
	Destinations int     `json:"destinations"`
	Seconds      float64 `json:"seconds"`
	IPVSSeconds  float64 `json:"ipvsSeconds"`
	VIPSeconds   float64 `json:"vipSeconds"`
}

func (h *Harness) logf(format string, args ...any) {
	if h.cfg.Log != nil {
		fmt.Fprintf(h.cfg.Log, "bench: "+format+"\n", args...)
	}
}

// Prepare runs the raw loop, then writes the objects and a token that may read the proxies' metrics.
func Prepare(ctx context.Context, l *lab.Lab, cfg Config) (*Harness, error) {
	cfgREST := l.Config()
	cfgREST.QPS, cfgREST.Burst = 1000, 1000
	c, err := client.New(cfgREST, client.Options{Scheme: l.Client().Scheme()})
	if err != nil {
		return nil, err
	}
	h := &Harness{lab: l, cfg: cfg, c: c, ready: make([]bool, cfg.Services)}

	if err := h.rawLoop(ctx); err != nil {
		return nil, err
	}
	h.logf("raw netlink loop: %d virtual servers, %d real servers, %d VIPs in %.2fs", h.RawLoop.Services, h.RawLoop.Destinations, h.RawLoop.Services, h.RawLoop.Seconds)

	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}); err != nil {
		return nil, err
	}
	if err := h.installCRD(ctx); err != nil {
		return nil, err
	}
	if h.token, err = h.metricsToken(ctx); err != nil {
		return nil, err
	}
	h.slices = make([]*discoveryv1.EndpointSlice, cfg.Services)
	t0 := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, cfg.Writers)
	next := make(chan int)
	for range cfg.Writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				svc, slice := objects(i, cfg.Endpoints)
				if err := c.Create(ctx, svc); err != nil {
					errs <- err
					return
				}
				if err := c.Create(ctx, slice); err != nil {
					errs <- err
					return
				}
				h.slices[i] = slice
				h.ready[i] = true
			}
		}()
	}
	for i := 0; i < cfg.Services; i++ {
		select {
		case next <- i:
			continue
		case err := <-errs:
			close(next)
			wg.Wait()
			return nil, err
		}
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		return nil, err
	default:
	}
	h.Writes = time.Since(t0)
	h.logf("wrote %d Services and %d EndpointSlices in %s", cfg.Services, cfg.Services, h.Writes.Round(time.Millisecond))
	if cfg.DataPath > 0 {
		if err := h.setupDataPath(ctx); err != nil {
			return nil, err
		}
	}
	return h, nil
}

// rawLoop programs the same objects with `benchvm raw` in a network namespace of its own, deleted after.
func (h *Harness) rawLoop(ctx context.Context) error {
	const ns = "bench-raw"
	if _, err := h.lab.ExecCombined(ctx, "", "ip", "netns", "add", ns); err != nil {
		return err
	}
	defer func() { _, _ = h.lab.ExecCombined(context.WithoutCancel(ctx), "", "ip", "netns", "del", ns) }()
	rctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	out, err := h.lab.Exec(rctx, ns, lab.GuestBin+"/benchvm", "raw",
		"--services", strconv.Itoa(h.cfg.Services), "--endpoints", strconv.Itoa(h.cfg.Endpoints),
		"--vip-base", vipBase.String(), "--dst-base", dstBase.String(),
		"--port", strconv.Itoa(port), "--target-port", strconv.Itoa(targetPort))
	if err != nil {
		return err
	}
	return json.Unmarshal([]byte(out), &h.RawLoop)
}

// installCRD creates the ServicePolicy CRD, as every install does (the operator's bundle and config/default
// carry it), and waits until it is served. Without it the agent takes another path, one production never
// takes: each Service's policy lookup misses in the RESTMapper and re-reads discovery.
func (h *Harness) installCRD(ctx context.Context) error {
	root, err := lab.RepoRoot()
	if err != nil {
		return err
	}
	data, err := os.ReadFile(filepath.Join(root, "config", "crd", "bases", "lb.ipvs-operator.dev_servicepolicies.yaml"))
	if err != nil {
		return err
	}
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := yaml.UnmarshalStrict(data, crd); err != nil {
		return err
	}
	if err := h.c.Create(ctx, crd); err != nil {
		return err
	}
	return wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		if err := h.c.Get(ctx, client.ObjectKeyFromObject(crd), crd); err != nil {
			return false, err
		}
		for _, c := range crd.Status.Conditions {
			if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	})
}

// metricsToken is a ServiceAccount token bound to cluster-admin: what may read any proxy's metrics.
func (h *Harness) metricsToken(ctx context.Context) (string, error) {
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "bench"}}
	if err := h.c.Create(ctx, sa); err != nil {
		return "", err
	}
	b := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "bench-metrics"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "cluster-admin"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: namespace, Name: "bench"}},
	}
	if err := h.c.Create(ctx, b); err != nil {
		return "", err
	}
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](24 * 3600)}}
	if err := h.c.SubResource("token").Create(ctx, sa, tr); err != nil {
		return "", err
	}
	return tr.Status.Token, nil
}

// Result is what one proxy measured.
type Result struct {
	Proxy string
	// ColdReady and ColdFull run from the proxy's start to its readiness and to the full state in the kernel.
	ColdReady, ColdFull time.Duration
	// Flips are single-flip latencies (API write start -> kernel), FlipWrites the API write calls alone.
	Flips, FlipWrites []time.Duration
	FlipSpan          time.Duration
	// Burst are the latencies of the burst's flips, each from its own write; BurstAll from the first write
	// to the last flip seen.
	Burst    []time.Duration
	BurstAll time.Duration
	// CPU seconds over the whole run and during the cold start; IdleCPU is the share of one core used while
	// nothing changed; PeakRSS in bytes.
	CPU, ColdCPU, IdleCPU float64
	PeakRSS               int64
	// DataPath is measured through one more ClusterIP once the cold start is done (datapath.go).
	DataPath DataPath
	// Audits seen in the proxy's metrics during the run, and their total time (AuditsOK false: none exposed).
	Audits       int
	AuditSeconds float64
	AuditsOK     bool
}

// Run measures one proxy on the objects Prepare wrote, then stops it and removes its state (Cleanup). The
// node's kernel must hold none of them when it starts.
func (h *Harness) Run(ctx context.Context, p Proxy) (*Result, error) {
	cfg := h.cfg
	r := &Result{Proxy: p.Name()}
	// Every proxy starts on the objects as Prepare wrote them: the cold start waits for every endpoint.
	if err := h.readyAll(ctx); err != nil {
		return nil, err
	}
	w, err := startWatch(ctx, h.lab, cfg.Node, p.Name(), p.Dataplane())
	if err != nil {
		return nil, err
	}
	defer w.close(ctx, h.lab)

	// Cold start: both conditions are asked before the proxy starts, and hold only once it has worked.
	var readyCh <-chan answer
	if u := p.ReadyURL(); u != "" {
		if readyCh, err = w.send("get", u, "-", "-", 200); err != nil {
			return nil, err
		}
	}
	fullCh, err := w.send(w.fullCmd, vipPrefix, cfg.Services, cfg.Endpoints)
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	pid, err := p.Start(ctx, h.lab, cfg.Node, cfg.AuditPeriod)
	if err != nil {
		return nil, err
	}
	stopped := false
	defer func() {
		if !stopped {
			_ = h.lab.Kill(context.WithoutCancel(ctx), pid)
		}
	}()
	coldTimeout := 5*time.Minute + time.Duration(cfg.Services)*100*time.Millisecond
	if readyCh != nil {
		a, err := await(ctx, readyCh, coldTimeout, p.Name()+" ready")
		if err != nil {
			return nil, err
		}
		r.ColdReady = a.seen.Sub(t0)
		h.logf("%s ready after %s", p.Name(), r.ColdReady.Round(time.Millisecond))
	}
	a, err := await(ctx, fullCh, coldTimeout, p.Name()+" full kernel state")
	if err != nil {
		return nil, h.withKernelState(ctx, p.Dataplane(), err)
	}
	r.ColdFull = a.seen.Sub(t0)
	h.logf("%s: full kernel state after %s", p.Name(), r.ColdFull.Round(time.Millisecond))
	if r.ColdCPU, _, err = h.procSample(ctx, w, pid); err != nil {
		return nil, err
	}
	if cfg.DataPath > 0 {
		if r.DataPath, err = h.measureDataPath(ctx); err != nil {
			return nil, err
		}
		h.logf("%s: data path %.0f connections/s, p50 %s, p99 %s, %d failed", p.Name(), r.DataPath.Rate(),
			dur(percentile(r.DataPath.Latencies, 50)), dur(percentile(r.DataPath.Latencies, 99)), r.DataPath.Errors)
	}

	// Single flips, one at a time, spaced so that they span several audit periods.
	span := time.Duration(cfg.FlipAudits)*cfg.AuditPeriod + cfg.AuditPeriod/2
	gap := span / time.Duration(cfg.Flips)
	tFlips := time.Now()
	for k := 0; k < cfg.Flips; k++ {
		start := time.Now()
		i := (k*37 + 1) % cfg.Services
		lat, write, err := h.flip(ctx, w, i)
		if err != nil {
			return nil, fmt.Errorf("flip %d (Service %s): %w", k, serviceName(i), err)
		}
		r.Flips = append(r.Flips, lat)
		r.FlipWrites = append(r.FlipWrites, write)
		if d := gap - time.Since(start); d > 0 {
			time.Sleep(d)
		}
	}
	r.FlipSpan = time.Since(tFlips)
	h.logf("%s: %d flips over %s, p50 %s max %s", p.Name(), cfg.Flips, r.FlipSpan.Round(time.Millisecond),
		percentile(r.Flips, 50), percentile(r.Flips, 100))
	// The watcher saw each flip at most one polling round after it reached the kernel.
	h.logf("%s: watcher's polling round at the flips p50 %s max %s (%d flips seen after the first look)", p.Name(),
		percentile(h.flipPolls, 50), percentile(h.flipPolls, 100), len(h.flipPolls))
	h.flipPolls = nil

	if err := h.burst(ctx, w, r); err != nil {
		return nil, err
	}
	h.logf("%s: burst of %d flips seen in %s", p.Name(), cfg.Burst, r.BurstAll.Round(time.Millisecond))

	// Idle: nothing changes; what the proxy still burns is its background work (audits, resyncs).
	c0, _, err := h.procSample(ctx, w, pid)
	if err != nil {
		return nil, err
	}
	ti := time.Now()
	time.Sleep(cfg.Idle)
	c1, rss, err := h.procSample(ctx, w, pid)
	if err != nil {
		return nil, err
	}
	r.IdleCPU = (c1 - c0) / time.Since(ti).Seconds()
	r.CPU, r.PeakRSS = c1, rss

	if u := p.MetricsURL(); u != "" {
		guestFile := w.guestDir + "/metrics-" + p.Name()
		if _, err := w.ask(ctx, time.Minute, "get", u, h.token, guestFile, 200); err != nil {
			return nil, err
		}
		data, err := os.ReadFile(filepath.Join(w.hostDir, "metrics-"+p.Name()))
		if err != nil {
			return nil, err
		}
		r.Audits, r.AuditSeconds, r.AuditsOK = p.Audits(string(data))
	}
	stopped = true
	// The measurements are complete: a failure to stop or clean up is returned with them, so the table
	// of a long run is still printed (the next proxy cannot run on a node left dirty).
	if err := p.Stop(ctx, h.lab, pid); err != nil {
		return r, fmt.Errorf("%w: %w", errAfterMeasuring, err)
	}
	if err := p.Cleanup(ctx, h.lab, cfg.Node); err != nil {
		return r, fmt.Errorf("%w: %w", errAfterMeasuring, err)
	}
	return r, nil
}

// errAfterMeasuring marks an error of Run that came once the proxy was measured (stopping, cleaning up).
var errAfterMeasuring = errors.New("after the measurements")

// readyAll writes back as ready the endpoints an earlier proxy's run left flipped off.
func (h *Harness) readyAll(ctx context.Context) error {
	n := 0
	for i, ready := range h.ready {
		if ready {
			continue
		}
		s := h.slices[i]
		s.Endpoints[0].Conditions.Ready = ptr.To(true)
		if err := h.c.Update(ctx, s); err != nil {
			return err
		}
		h.ready[i] = true
		n++
	}
	if n > 0 {
		h.logf("%d endpoints flipped off by the last run written back as ready", n)
	}
	return nil
}

// withKernelState adds to err the start of what the node's kernel holds, as its own tools list it.
func (h *Harness) withKernelState(ctx context.Context, dp Dataplane, err error) error {
	argv := []string{"ipvsadm", "-Ln"}
	switch dp {
	case DataplaneNFTables:
		argv = []string{"nft", "list", "map", "ip", "kube-proxy", "service-ips"}
	case DataplaneIPTables:
		argv = []string{"iptables", "-t", "nat", "-S", "KUBE-SERVICES"}
	}
	out, lerr := h.lab.ExecCombined(context.WithoutCancel(ctx), h.cfg.Node, argv...)
	if len(out) > 3000 {
		out = out[:3000] + "\n..."
	}
	return errors.Join(err, fmt.Errorf("%s on %s:\n%s", strings.Join(argv, " "), h.cfg.Node, out), lerr)
}

func (h *Harness) procSample(ctx context.Context, w *kernelWatch, pid int) (cpu float64, hwm int64, err error) {
	a, err := w.ask(ctx, time.Minute, "proc", pid)
	if err != nil {
		return 0, 0, err
	}
	cpu, _ = strconv.ParseFloat(a.fields["cpu"], 64)
	kb, _ := strconv.ParseInt(a.fields["hwm_kb"], 10, 64)
	return cpu, kb * 1024, nil
}

// flipTimeout bounds one flip: an audit holding the engine for its whole duration is still measured.
const flipTimeout = 5 * time.Minute

// flip turns the ready flag of Service i's first endpoint around and returns the time from the start of
// the write to the kernel showing it, and the time of the write call alone.
func (h *Harness) flip(ctx context.Context, w *kernelWatch, i int) (time.Duration, time.Duration, error) {
	ch, t0, write, err := h.writeFlip(ctx, w, i)
	if err != nil {
		return 0, 0, err
	}
	a, err := await(ctx, ch, flipTimeout, "flip of "+serviceName(i))
	if err != nil {
		return 0, 0, err
	}
	if d, err := time.ParseDuration(a.fields["poll"]); err == nil {
		h.flipPolls = append(h.flipPolls, d)
	}
	return a.seen.Sub(t0), write, nil
}

// writeFlip asks the watcher for the new state, then writes it.
func (h *Harness) writeFlip(ctx context.Context, w *kernelWatch, i int) (<-chan answer, time.Time, time.Duration, error) {
	want := !h.ready[i]
	wantBit := 0
	if want {
		wantBit = 1
	}
	ch, err := w.send(w.flipCmd, nth(vipBase, i), port, nth(dstBase, i*h.cfg.Endpoints), targetPort, wantBit)
	if err != nil {
		return nil, time.Time{}, 0, err
	}
	s := h.slices[i]
	s.Endpoints[0].Conditions.Ready = ptr.To(want)
	t0 := time.Now()
	if err := h.c.Update(ctx, s); err != nil {
		return nil, time.Time{}, 0, err
	}
	h.ready[i] = want
	return ch, t0, time.Since(t0), nil
}

// burst writes flips of Burst different Services as fast as the writers go.
func (h *Harness) burst(ctx context.Context, w *kernelWatch, r *Result) error {
	n := h.cfg.Burst
	idx := make([]int, n)
	for k := range idx {
		idx[k] = k * h.cfg.Services / n
	}
	type sent struct {
		ch <-chan answer
		t0 time.Time
	}
	out := make([]sent, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	tStart := time.Now()
	next := make(chan int)
	for range h.cfg.Writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range next {
				ch, t0, _, err := h.writeFlip(ctx, w, idx[k])
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				out[k] = sent{ch, t0}
				mu.Unlock()
			}
		}()
	}
	for k := range n {
		next <- k
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	var last time.Time
	for k, s := range out {
		a, err := await(ctx, s.ch, flipTimeout, "burst flip of "+serviceName(idx[k]))
		if err != nil {
			return err
		}
		r.Burst = append(r.Burst, a.seen.Sub(s.t0))
		if a.seen.After(last) {
			last = a.seen
		}
	}
	r.BurstAll = last.Sub(tStart)
	return nil
}
