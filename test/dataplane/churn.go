package dataplane

import (
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ipvs-operator/ipvs-operator/api/agentconfig"
	lbv1alpha1 "github.com/ipvs-operator/ipvs-operator/api/v1alpha1"
)

// The model-based churn test (issue 7): a seeded random sequence of steps (churn_steps.go) run against the
// cluster; after each one, every node's kernel is compared with the oracle (churn_oracle.go) until they agree
// or a bound passes, while a steady request loop runs on Services no step touches.
//
// Bounds, stated:
//   - after a step that edits API objects, every node matches the oracle within churnAPIBound (10 s),
//     counted from the later of the step's end and the moment the test saw the oracle's answer change (an
//     EndpointSlice the controller rewrites after a Service edit is part of the API settling, not of the
//     agent's latency; 0 s means the agent was there before the test saw the change);
//   - after a drift step (`ipvsadm -C`, `nft flush ruleset`, kube-proxy's leftover cleanup), the node is
//     whole again within churnDriftBound (10 s). The agent notices within its 1 s drift check and repairs
//     in tens of milliseconds (ipvs/syncer's kernel test measures that alone); what this test measures also
//     holds one poll round of both nodes (six execs in the TCG-emulated VM, 1-2 s) and the VM's pauses
//     under load: 0.9-7.0 s measured on a busy machine, at most 2.3 s in 300 steps on a quiet one. Before
//     the drift check, the periodic audit alone took up to its period (10 s in the lab) and more;
//   - a real server at weight 0 (draining) is never a desired one, and is gone within the default drain
//     timeout plus 15 s;
//   - the steady loop (churn_steady.go): each request's timeout is 1 s, so no request slower than 1 s
//     passes; zero refused or reset requests (IPVS had nothing, or the wrong thing, to send them to); no
//     burst of consecutive timeouts (a black-holed VIP or a stuck flow); and no more isolated timeouts than
//     the same protocol's control loop, which requests the steady pods' own addresses without IPVS,
//     explains (the emulated network's own loss: 46 of 6,397 TCP control requests timed out in a 300-step
//     run on a quiet machine; the UDP steady loop, whose datagrams are not retransmitted, timed out 1-2
//     times in ~1,500 requests in half of the 30-step runs while a TCP-only control lost none).
//
// Drift steps flush the whole node, the steady Services with it: they do touch those Services. Steady
// windows of the flushed node that overlap a drift step (from the flush to the node's convergence, plus
// 1 s) are therefore excused from the zero-failure assertion and reported apart; the drift bound is what
// holds those steps to account.
//
// Controls run beside the steady loop on every node: the same requests, over both protocols, to each steady
// pod's own address, which no IPVS rule touches. Under TCG emulation on a shared 2-core machine the VM can
// pause for more than a second (a Go binary starting, the host busy); a steady failure in a window where a
// control on any node failed too, by timeouts only, is that, not the data path, and is reported apart
// instead of failing the spec. The kernel's drop counters on the nodes and pods, read before and after the
// loop, are printed with the figures.
//
// By default a violation is recorded and the run goes on (so one run shows every kind of failure); a node
// still off after churnCap is healed (a label touch on the churn Services, then an agent restart) so that
// the next steps are judged on their own. CHURN_FAIL_FAST=1 stops at the first violation. Either way the
// spec fails at the end with the seed, the steps so far and the diffs; CHURN_SEED=<seed> replays.

// Environment knobs of the churn test.
const (
	churnStepsEnv    = "CHURN_STEPS"
	churnSeedEnv     = "CHURN_SEED"
	churnFailFastEnv = "CHURN_FAIL_FAST"
	// churnDefaultSteps keeps the run inside `make test` at a few minutes in the lab.
	churnDefaultSteps = 30
)

var (
	churnAPIBound   = envDuration("CHURN_API_BOUND", 10*time.Second)
	churnDriftBound = envDuration("CHURN_DRIFT_BOUND", 10*time.Second)
	// churnCap is how long a step is waited for before it is declared not converged.
	churnCap        = envDuration("CHURN_CAP", 25*time.Second)
	churnDrainBound = time.Duration(lbv1alpha1.DefaultDrainTimeoutSeconds)*time.Second + 15*time.Second
	// churnSteadyTimeout is the steady loop's per-request timeout: the 1 s latency bound.
	churnSteadyTimeout = time.Second
	churnSteadyWindow  = 10 * time.Second
)

func envDuration(name string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(name)); err == nil && d > 0 {
		return d
	}
	return def
}

func churnSteps() int {
	if n, err := strconv.Atoi(os.Getenv(churnStepsEnv)); err == nil && n > 0 {
		return n
	}
	return churnDefaultSteps
}

// ChurnExtraTime is how much longer than its usual budget a suite needs for the churn run CHURN_STEPS asks
// for (0 for the default run): about 10 s per step in the lab.
func ChurnExtraTime() time.Duration {
	if n := churnSteps(); n > churnDefaultSteps {
		return time.Duration(n-churnDefaultSteps) * 10 * time.Second
	}
	return 0
}

// registerChurn declares the churn spec; drv and ns are read when it runs (RegisterScenarios' BeforeEach
// sets them).
func registerChurn(drv *Driver, ns *string) {
	Describe("churn", Label("churn"), func() {
		It("keeps every node's IPVS equal to the oracle through seeded random churn, and a steady loop on untouched Services sees no failure", func(ctx SpecContext) {
			seed := time.Now().UnixNano()
			if s := os.Getenv(churnSeedEnv); s != "" {
				var err error
				seed, err = strconv.ParseInt(s, 10, 64)
				Expect(err).NotTo(HaveOccurred(), "%s=%q", churnSeedEnv, s)
			}
			r := newChurnRun(*drv, *ns, seed, churnSteps())
			r.run(ctx)
		}, NodeTimeout(40*time.Minute+ChurnExtraTime()))
	})
}

// churnRun is one run's state.
type churnRun struct {
	drv      Driver
	ns       string
	nodes    []string
	seed     int64
	steps    []churnStep
	failFast bool
	clients  map[string]*corev1.Pod // one client pod per node
	steadyIP map[string]string      // steady Service name -> ClusterIP
	// steadyPodIPs are the steady pods' own addresses: the controls request them without IPVS in the way.
	steadyPodIPs []string
	steadyPods   []types.NamespacedName
	// counters are the kernel's drop counters on every node and steady pod, read around the steady loop.
	counters counterSnapshot

	tracked  map[string]bool      // every ClusterIP the namespace ever had
	failed   map[string]bool      // pods whose readiness a step failed
	draining map[string]time.Time // "node line" of a weight-0 real server -> first seen
	pokes    int
	// scopeAll: the agents serve every Service not labelled for another proxy (agentsScopeAll).
	scopeAll bool

	results []stepResult
	drifts  []driftWindow

	mu      sync.Mutex
	windows []steadyWindow
}

type stepResult struct {
	n          int
	step       churnStep
	note       string        // e.g. "skipped: no ready pod"
	converge   time.Duration // from settled to every node equal; -1 when it did not
	bound      time.Duration
	violations []string
	healed     string
}

type driftWindow struct {
	node       string
	start, end time.Time
}

type steadyWindow struct {
	node, service string
	start, end    time.Time
	out           outcome
	err           error
}

func newChurnRun(drv Driver, ns string, seed int64, n int) *churnRun {
	nodes := drv.Nodes()
	return &churnRun{
		drv: drv, ns: ns, nodes: nodes, seed: seed, steps: generateChurn(seed, n, len(nodes)),
		failFast: os.Getenv(churnFailFastEnv) != "",
		clients:  map[string]*corev1.Pod{}, steadyIP: map[string]string{},
		tracked: map[string]bool{}, failed: map[string]bool{}, draining: map[string]time.Time{},
	}
}

func (r *churnRun) logf(format string, args ...any) {
	GinkgoWriter.Printf(time.Now().Format("15:04:05.000")+" churn: "+format+"\n", args...)
}

func (r *churnRun) run(ctx context.Context) {
	r.logf("seed=%d steps=%d (replay: %s=%d %s=%d)", r.seed, len(r.steps), churnSeedEnv, r.seed, churnStepsEnv, len(r.steps))
	AddReportEntry("churn seed", fmt.Sprintf("%s=%d %s=%d", churnSeedEnv, r.seed, churnStepsEnv, len(r.steps)))
	r.setUp(ctx)

	// The pool before the first step must match the oracle too.
	first := r.converge(ctx, churnStep{Kind: "initial"}, time.Now())
	Expect(first.violations).To(BeEmpty(), "the initial pool (seed %d)", r.seed)

	stop := make(chan struct{})
	before := r.readCounters(ctx)
	waitSteady := r.startSteady(ctx, stop)
	started := time.Now()
	for i, st := range r.steps {
		res := r.runStep(ctx, i+1, st)
		r.results = append(r.results, res)
		r.logf("step %d/%d %s: %s", i+1, len(r.steps), st, res.summary())
		if r.failFast && len(res.violations) > 0 {
			break
		}
	}
	close(stop)
	waitSteady()
	r.counters = r.readCounters(ctx).minus(before)
	r.report(time.Since(started))
}

// setUp makes the pool: the churn Deployments, the steady Deployment and its two Services (TCP and UDP),
// and a client pod on every node.
func (r *churnRun) setUp(ctx context.Context) {
	r.scopeAll = agentsScopeAll(ctx, r.drv)
	r.logf("agents in scope all: %v", r.scopeAll)
	for _, d := range churnDeployments {
		echoDeployment(ctx, r.drv, r.ns, d, churnInitialReplicas, "", httpPort, httpsPort, udpPort)
	}
	// The steady pods' readiness must not flap: a 1 s probe that fails once (FailureThreshold 1, as the other
	// scenarios want for fast readiness specs) turns every pod of a node NotReady when the TCG-emulated VM
	// pauses for over a second, and the steady Services then rightly have no endpoint and refuse clients.
	// That is Kubernetes' semantics, not the data path the steady loop measures; no step touches these pods.
	echoDeploymentWith(ctx, r.drv, r.ns, "steady", 2, "", func(spec *corev1.PodSpec) {
		spec.Containers[0].ReadinessProbe.FailureThreshold = 10
	}, httpPort, udpPort)
	for _, s := range []struct {
		name string
		port corev1.ServicePort
	}{
		{"steady-http", svcPort("http", 80, intstr.FromInt32(8080), corev1.ProtocolTCP)},
		{"steady-dns", svcPort("dns", 53, intstr.FromString("dns"), corev1.ProtocolUDP)},
	} {
		svc := newService(ctx, r.drv, r.ns, s.name, map[string]string{"app": "steady"}, nil, s.port)
		r.steadyIP[s.name] = svc.Spec.ClusterIP
	}
	for i, node := range r.nodes {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: r.ns, Name: fmt.Sprintf("churn-client-%d", i), Labels: map[string]string{"role": "churn-client-" + node}},
			Spec:       echoPodSpec(r.drv, httpPort),
		}
		p.Spec.NodeName = node
		Expect(r.drv.Client().Create(ctx, p)).To(Succeed())
		r.clients[node] = &waitPodsReady(ctx, r.drv, r.ns, p.Labels, 1)[0]
	}
	for _, d := range append(slices.Clone(churnDeployments), "steady") {
		pods := waitPodsReady(ctx, r.drv, r.ns, map[string]string{"app": d}, churnInitialReplicas)
		if d == "steady" {
			for _, p := range pods {
				r.steadyPodIPs = append(r.steadyPodIPs, p.Status.PodIP)
				r.steadyPods = append(r.steadyPods, types.NamespacedName{Namespace: p.Namespace, Name: p.Name})
			}
		}
	}
}

// runStep applies a step, waits for the API side to settle, then for every node to match the oracle.
func (r *churnRun) runStep(ctx context.Context, n int, st churnStep) stepResult {
	start := time.Now()
	note := r.apply(ctx, st)
	res := r.converge(ctx, st, time.Now())
	res.n, res.note = n, note
	if st.Kind.drift() {
		// converge returns once the node is whole again (or healed): the window ends now.
		r.drifts = append(r.drifts, driftWindow{node: r.nodes[st.Node], start: start, end: time.Now().Add(time.Second)})
	}
	return res
}

func (res stepResult) summary() string {
	s := ""
	if res.note != "" {
		s = res.note + "; "
	}
	if res.converge >= 0 {
		s += fmt.Sprintf("converged in %s (bound %s)", res.converge.Round(time.Millisecond), res.bound)
	} else {
		s += fmt.Sprintf("NOT converged within %s", churnCap)
	}
	if res.healed != "" {
		s += "; healed by " + res.healed
	}
	if len(res.violations) > 0 {
		s += fmt.Sprintf("; VIOLATIONS:\n  %s", strings.Join(res.violations, "\n  "))
	}
	return s
}

// apply performs a step and waits until the API objects it changes have settled (pods Ready or gone, the
// agent replaced). It returns a note when the step had nothing to act on.
func (r *churnRun) apply(ctx context.Context, st churnStep) string {
	GinkgoHelper()
	c := r.drv.Client()
	key := types.NamespacedName{Namespace: r.ns, Name: st.Target}
	switch st.Kind {
	case stepCreateService:
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: r.ns, Name: st.Target}}
		r.shapeService(svc, *st.Service)
		Expect(c.Create(ctx, svc)).To(Succeed(), "%s", st)
		if st.Service.Deployment == "" {
			es := &discoveryv1.EndpointSlice{}
			r.shapeSlice(es, st.Target, st.Slice)
			Expect(c.Create(ctx, es)).To(Succeed(), "%s", st)
		}
	case stepEditService:
		Expect(retry.RetryOnConflict(retry.DefaultRetry, func() error {
			svc := &corev1.Service{}
			if err := c.Get(ctx, key, svc); err != nil {
				return err
			}
			r.shapeService(svc, *st.Service)
			return c.Update(ctx, svc)
		})).To(Succeed(), "%s", st)
	case stepDeleteService:
		Expect(c.Delete(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: r.ns, Name: st.Target}})).To(Succeed(), "%s", st)
		Expect(client.IgnoreNotFound(c.Delete(ctx, &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: r.ns, Name: st.Target + "-manual"}}))).To(Succeed())
	case stepEditSlice:
		Expect(retry.RetryOnConflict(retry.DefaultRetry, func() error {
			es := &discoveryv1.EndpointSlice{}
			if err := c.Get(ctx, types.NamespacedName{Namespace: r.ns, Name: st.Target + "-manual"}, es); err != nil {
				return err
			}
			r.shapeSlice(es, st.Target, st.Slice)
			return c.Update(ctx, es)
		})).To(Succeed(), "%s", st)
	case stepScale:
		Expect(c.Patch(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: r.ns, Name: st.Target}},
			client.RawPatch(types.MergePatchType, fmt.Appendf(nil, `{"spec":{"replicas":%d}}`, st.Replicas)))).To(Succeed(), "%s", st)
		r.waitDeployment(ctx, st.Target, st.Replicas)
	case stepFailReadiness, stepPassReadiness:
		return r.readiness(ctx, st)
	case stepCreatePolicy, stepConflictPolicy:
		p := &lbv1alpha1.ServicePolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: r.ns, Name: st.Target},
			Spec: lbv1alpha1.ServicePolicySpec{
				Selector:  &metav1.LabelSelector{MatchLabels: map[string]string{churnGroupLabel: st.Policy.Group}},
				Scheduler: st.Policy.Scheduler,
			},
		}
		Expect(c.Create(ctx, p)).To(Succeed(), "%s", st)
	case stepEditPolicy:
		Expect(retry.RetryOnConflict(retry.DefaultRetry, func() error {
			p := &lbv1alpha1.ServicePolicy{}
			if err := c.Get(ctx, key, p); err != nil {
				return err
			}
			p.Spec.Scheduler = st.Policy.Scheduler
			return c.Update(ctx, p)
		})).To(Succeed(), "%s", st)
	case stepDeletePolicy:
		Expect(c.Delete(ctx, &lbv1alpha1.ServicePolicy{ObjectMeta: metav1.ObjectMeta{Namespace: r.ns, Name: st.Target}})).To(Succeed(), "%s", st)
	case stepRestartAgent:
		restartAgent(ctx, r.drv, r.nodes[st.Node])
	case stepIPVSClear:
		// Equivalent to: `ipvsadm -C` by hand.
		r.nodeExec(ctx, st.Node, "ipvsadm", "-C")
	case stepNftFlush:
		// Equivalent to: a firewall reload that starts from `nft flush ruleset`.
		r.nodeExec(ctx, st.Node, "nft", "flush", "ruleset")
	case stepKubeProxyFlush:
		// What kube-proxy (nftables mode) runs at every start, platformCleanup -> ipvs.CleanupLeftovers:
		// delete the kube-ipvs0 dummy device and flush all of IPVS. A leftover kube-ipvs0 is made first so
		// that the deletion is real; the agent's own device, ipvs0, is left alone as kube-proxy leaves it.
		_, _ = r.drv.NodeExec(ctx, r.nodes[st.Node], "ip", "link", "add", "kube-ipvs0", "type", "dummy")
		r.nodeExec(ctx, st.Node, "ipvsadm", "-C")
		r.nodeExec(ctx, st.Node, "ip", "link", "del", "kube-ipvs0")
	default:
		Fail(fmt.Sprintf("unknown step kind %q", st.Kind))
	}
	return ""
}

func (r *churnRun) nodeExec(ctx context.Context, node int, argv ...string) {
	GinkgoHelper()
	out, err := r.drv.NodeExec(ctx, r.nodes[node], argv...)
	Expect(err).NotTo(HaveOccurred(), "%s on %s: %s", strings.Join(argv, " "), r.nodes[node], out)
}

// agentDaemonSet is the DaemonSet the operator renders (controllers/operator.AgentName).
const agentDaemonSet = "ipvs-operator-agent"

// churnOtherProxy is the service-proxy-name of out-of-scope Services when the agents run in scope all.
const churnOtherProxy = "another-proxy"

// agentsScopeAll reports whether the installed agents run in scope all, from the DaemonSet the operator
// rendered (its --scope argument): a lab without kube-proxy installs them so, a kind cluster does not.
func agentsScopeAll(ctx context.Context, drv Driver) bool {
	GinkgoHelper()
	ds := &appsv1.DaemonSet{}
	Expect(drv.Client().Get(ctx, client.ObjectKey{Namespace: AgentNamespace, Name: agentDaemonSet}, ds)).To(Succeed())
	for _, c := range ds.Spec.Template.Spec.Containers {
		if slices.Contains(c.Args, "--"+agentconfig.FlagScope+"="+agentconfig.ScopeAll) {
			return true
		}
	}
	return false
}

// shapeService writes a shape onto a Service, replacing what the shape decides and keeping the rest (its
// ClusterIP, and a poke label).
func (r *churnRun) shapeService(svc *corev1.Service, sh svcShape) {
	labels := map[string]string{"app": svc.Name, churnGroupLabel: sh.Group}
	if v, ok := svc.Labels[churnPokeLabel]; ok {
		labels[churnPokeLabel] = v
	}
	switch {
	case sh.InScope:
		labels[lbv1alpha1.ServiceProxyNameLabel] = lbv1alpha1.ServiceProxyName
	case r.scopeAll:
		// Agents in scope all serve unlabelled Services: out of scope means labelled for another proxy.
		labels[lbv1alpha1.ServiceProxyNameLabel] = churnOtherProxy
	}
	svc.Labels = labels
	svc.Spec.Selector = nil
	if sh.Deployment != "" {
		svc.Spec.Selector = map[string]string{"app": sh.Deployment}
	}
	svc.Spec.Ports = nil
	for _, p := range sh.Ports {
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: p.Name, Port: p.Port, Protocol: p.Proto, TargetPort: p.Target})
	}
	svc.Spec.SessionAffinity, svc.Spec.SessionAffinityConfig = corev1.ServiceAffinityNone, nil
	if sh.Affinity {
		svc.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
		if sh.AffinityTimeout > 0 {
			svc.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr.To(sh.AffinityTimeout)}}
		}
	}
	itp := corev1.ServiceInternalTrafficPolicyCluster
	if sh.Local {
		itp = corev1.ServiceInternalTrafficPolicyLocal
	}
	svc.Spec.InternalTrafficPolicy = &itp
}

// shapeSlice writes a hand-made slice for a selector-less Service: its endpoints, and ports http (8080/TCP)
// and dns (5353/UDP) only, so that the Service's other ports have no endpoints.
func (r *churnRun) shapeSlice(es *discoveryv1.EndpointSlice, service string, eps []epShape) {
	es.Namespace, es.Name = r.ns, service+"-manual"
	es.Labels = map[string]string{discoveryv1.LabelServiceName: service, discoveryv1.LabelManagedBy: "e2e.ipvs-operator.dev"}
	es.AddressType = discoveryv1.AddressTypeIPv4
	es.Ports = []discoveryv1.EndpointPort{
		{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)},
		{Name: ptr.To("dns"), Port: ptr.To[int32](5353), Protocol: ptr.To(corev1.ProtocolUDP)},
	}
	es.Endpoints = nil
	for _, e := range eps {
		ep := discoveryv1.Endpoint{Addresses: []string{e.Addr}, Conditions: discoveryv1.EndpointConditions{
			Ready: ptr.To(e.Ready), Serving: ptr.To(e.Serving), Terminating: ptr.To(e.Terminating)}}
		if e.Node >= 0 {
			ep.NodeName = ptr.To(r.nodes[e.Node])
		}
		es.Endpoints = append(es.Endpoints, ep)
	}
}

// waitDeployment waits until a churn Deployment has exactly replicas pods, none terminating, and every one
// Ready except those a step made fail their readiness.
func (r *churnRun) waitDeployment(ctx context.Context, name string, replicas int32) {
	GinkgoHelper()
	Eventually(ctx, func(g Gomega) {
		list := &corev1.PodList{}
		g.Expect(r.drv.Client().List(ctx, list, client.InNamespace(r.ns), client.MatchingLabels{"app": name})).To(Succeed())
		g.Expect(list.Items).To(HaveLen(int(replicas)), "pods of %s", name)
		for _, p := range list.Items {
			g.Expect(p.DeletionTimestamp).To(BeNil(), "pod %s terminating", p.Name)
			g.Expect(podReady(&p) || r.failed[p.Name]).To(BeTrue(), "pod %s Ready", p.Name)
		}
	}).WithTimeout(120 * time.Second).WithPolling(250 * time.Millisecond).Should(Succeed())
}

// readiness makes a pod of the step's Deployment fail its readiness probe, or pass it again.
func (r *churnRun) readiness(ctx context.Context, st churnStep) string {
	GinkgoHelper()
	list := &corev1.PodList{}
	Expect(r.drv.Client().List(ctx, list, client.InNamespace(r.ns), client.MatchingLabels{"app": st.Target})).To(Succeed())
	var candidates []corev1.Pod
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil && p.Status.PodIP != "" && r.failed[p.Name] == (st.Kind == stepPassReadiness) &&
			(st.Kind == stepPassReadiness || podReady(&p)) {
			candidates = append(candidates, p)
		}
	}
	if len(candidates) == 0 {
		return "skipped: no candidate pod"
	}
	sort.Slice(candidates, func(i, j int) bool { return candidates[i].Name < candidates[j].Name })
	p := candidates[st.Pick%len(candidates)]
	path, wantReady := "/admin/fail-readiness", false
	if st.Kind == stepPassReadiness {
		path, wantReady = "/admin/pass-readiness", true
	}
	got := fromPod(ctx, r.drv, r.clients[r.nodes[0]], request{addr: hostPort(p.Status.PodIP, 8080) + path})
	Expect(got.Failed).To(BeZero(), "%s %s: %s", path, p.Name, got.Raw)
	Eventually(ctx, func(g Gomega) {
		cur := &corev1.Pod{}
		g.Expect(r.drv.Client().Get(ctx, client.ObjectKeyFromObject(&p), cur)).To(Succeed())
		g.Expect(podReady(cur)).To(Equal(wantReady))
	}).WithTimeout(30*time.Second).WithPolling(200*time.Millisecond).Should(Succeed(), "pod %s Ready=%v", p.Name, wantReady)
	if wantReady {
		delete(r.failed, p.Name)
	} else {
		r.failed[p.Name] = true
	}
	return "pod " + p.Name
}

// churnPokeLabel is the label the healer touches on churn Services: the agent looks at label changes, so a
// Service whose spec edit it missed is recomputed.
const churnPokeLabel = "churn-poke"

// observe reads the API objects and every node's kernel, and returns the oracle's views, the kernel's
// views and the per-node differences.
func (r *churnRun) observe(ctx context.Context) (map[string]nodeView, map[string]kernelView, map[string][]string) {
	GinkgoHelper()
	c := r.drv.Client()
	var w churnWorld
	svcs := &corev1.ServiceList{}
	Expect(c.List(ctx, svcs, client.InNamespace(r.ns))).To(Succeed())
	eps := &discoveryv1.EndpointSliceList{}
	Expect(c.List(ctx, eps, client.InNamespace(r.ns))).To(Succeed())
	pols := &lbv1alpha1.ServicePolicyList{}
	Expect(c.List(ctx, pols, client.InNamespace(r.ns))).To(Succeed())
	w.Services, w.Slices, w.Policies, w.ScopeAll = svcs.Items, eps.Items, pols.Items, r.scopeAll
	for _, s := range w.Services {
		for _, ip := range append([]string{s.Spec.ClusterIP}, s.Spec.ClusterIPs...) {
			if ip != "" && ip != corev1.ClusterIPNone {
				r.tracked[ip] = true
			}
		}
	}
	want, got, diffs := map[string]nodeView{}, map[string]kernelView{}, map[string][]string{}
	for _, node := range r.nodes {
		o := oracleView(w, node)
		// The agent's nftables table exists on every node it runs on; `nft flush ruleset` removes it.
		o.Lines = append(o.Lines, "# nft table inet ipvs-operator")
		want[node] = o
		table, _ := ipvsSave(ctx, r.drv, node)
		k := viewOfKernel(table, boundVIPs(ctx, r.drv, node), r.tracked)
		tables, err := r.drv.NodeExec(ctx, node, "nft", "list", "tables")
		Expect(err).NotTo(HaveOccurred(), "nft list tables on %s: %s", node, tables)
		if strings.Contains(tables, "table inet ipvs-operator") {
			k.Lines = append(k.Lines, "# nft table inet ipvs-operator")
		}
		got[node] = k
		if d := viewDiff(o, k.nodeView); len(d) > 0 {
			diffs[node] = d
		}
	}
	return want, got, diffs
}

// converge polls until every node matches the oracle, or churnCap passes since the API last changed.
func (r *churnRun) converge(ctx context.Context, st churnStep, settled time.Time) stepResult {
	GinkgoHelper()
	res := stepResult{step: st, bound: churnAPIBound, converge: -1}
	if st.Kind.drift() {
		res.bound = churnDriftBound
	}
	from := settled
	var last string
	var diffs map[string][]string
	for {
		want, got, d := r.observe(ctx)
		diffs = d
		now := time.Now()
		if key := fmt.Sprint(want); key != last {
			if last != "" {
				from = now
			}
			last = key
		}
		res.violations = append(res.violations, r.checkDraining(got, now)...)
		if len(diffs) == 0 {
			res.converge = now.Sub(from)
			break
		}
		// The API may keep changing (a flapping pod); three caps from the step's end is the most a step gets.
		if now.Sub(from) > churnCap || now.Sub(settled) > 3*churnCap {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	switch {
	case res.converge < 0:
		res.violations = append(res.violations, fmt.Sprintf("not converged within %s; diff per node: %s", churnCap, formatDiffs(diffs)))
		if st.Kind != "initial" {
			res.healed = r.heal(ctx, diffs)
		}
	case res.converge > res.bound:
		res.violations = append(res.violations, fmt.Sprintf("converged in %s, over the %s bound", res.converge.Round(time.Millisecond), res.bound))
	}
	return res
}

// checkDraining bounds weight-0 real servers: never a desired one (the diff shows those as missing), and
// gone within churnDrainBound of being first seen.
func (r *churnRun) checkDraining(got map[string]kernelView, now time.Time) []string {
	var out []string
	seen := map[string]bool{}
	for node, k := range got {
		for _, l := range k.Draining {
			key := node + " " + l
			seen[key] = true
			first, ok := r.draining[key]
			if !ok {
				r.draining[key] = now
				continue
			}
			if !first.IsZero() && now.Sub(first) > churnDrainBound {
				out = append(out, fmt.Sprintf("%s: real server at weight 0 for more than %s: %s", node, churnDrainBound, l))
				r.draining[key] = time.Time{} // report once
			}
		}
	}
	for key := range r.draining {
		if !seen[key] {
			delete(r.draining, key)
		}
	}
	return out
}

// heal brings diverged nodes back so that the next steps are judged on their own: first a label touch on
// every churn Service (the agent recomputes a Service whose labels change), then an agent restart.
func (r *churnRun) heal(ctx context.Context, diffs map[string][]string) string {
	GinkgoHelper()
	r.pokes++
	list := &corev1.ServiceList{}
	Expect(r.drv.Client().List(ctx, list, client.InNamespace(r.ns))).To(Succeed())
	for _, s := range list.Items {
		if _, steady := r.steadyIP[s.Name]; steady {
			continue
		}
		patch := fmt.Appendf(nil, `{"metadata":{"labels":{%q:"%d"}}}`, churnPokeLabel, r.pokes)
		Expect(client.IgnoreNotFound(r.drv.Client().Patch(ctx, &s, client.RawPatch(types.MergePatchType, patch)))).To(Succeed())
	}
	if r.waitEqual(ctx, 15*time.Second) {
		return "a label touch"
	}
	for node := range diffs {
		restartAgent(ctx, r.drv, node)
	}
	if r.waitEqual(ctx, 30*time.Second) {
		return "an agent restart"
	}
	_, _, d := r.observe(ctx)
	Fail(fmt.Sprintf("churn seed %d: nodes still differ from the oracle after a label touch and an agent restart: %s\nsteps so far:\n%s",
		r.seed, formatDiffs(d), r.stepList()))
	return ""
}

func (r *churnRun) waitEqual(ctx context.Context, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if _, _, d := r.observe(ctx); len(d) == 0 {
			return true
		}
		time.Sleep(250 * time.Millisecond)
	}
	return false
}

// churnWorst prints a worst convergence time; past churnCap it means some step never converged.
func churnWorst(d time.Duration) string {
	if d > churnCap {
		return fmt.Sprintf("never (>%s)", churnCap)
	}
	return d.Round(time.Millisecond).String()
}

func formatDiffs(diffs map[string][]string) string {
	var b strings.Builder
	for _, node := range slices.Sorted(maps.Keys(diffs)) {
		fmt.Fprintf(&b, "\n  %s:\n    %s", node, strings.Join(diffs[node], "\n    "))
	}
	return b.String()
}

func (r *churnRun) stepList() string {
	var b strings.Builder
	for _, res := range r.results {
		fmt.Fprintf(&b, "  %3d %s: %s\n", res.n, res.step, res.summary())
	}
	return b.String()
}

// report prints the figures and fails the spec on any violation or steady-loop failure.
func (r *churnRun) report(took time.Duration) {
	GinkgoHelper()
	var (
		worstAPI, worstDrift time.Duration
		violations           []string
		perKind              = map[stepKind][]string{}
		kindMax              = map[stepKind]time.Duration{}
	)
	for _, res := range r.results {
		k := res.step.Kind
		if res.converge > kindMax[k] {
			kindMax[k] = res.converge
		}
		if res.converge < 0 {
			kindMax[k] = churnCap + time.Nanosecond
		}
		conv := res.converge
		if conv < 0 {
			conv = churnCap + time.Nanosecond // never: worse than any measured time
		}
		if k.drift() {
			worstDrift = max(worstDrift, conv)
		} else {
			worstAPI = max(worstAPI, conv)
		}
		for _, v := range res.violations {
			violations = append(violations, fmt.Sprintf("step %d %s: %s", res.n, res.step, v))
			perKind[k] = append(perKind[k], strconv.Itoa(res.n))
		}
	}

	t := r.tallySteady()

	var b strings.Builder
	fmt.Fprintf(&b, "churn: seed=%d steps=%d/%d took=%s\n", r.seed, len(r.results), len(r.steps), took.Round(time.Second))
	fmt.Fprintf(&b, "  worst convergence: API steps %s (bound %s), drift steps %s (bound %s)\n",
		churnWorst(worstAPI), churnAPIBound, churnWorst(worstDrift), churnDriftBound)
	for _, k := range slices.Sorted(maps.Keys(kindMax)) {
		n := 0
		for _, res := range r.results {
			if res.step.Kind == k {
				n++
			}
		}
		worst := churnWorst(kindMax[k])
		fmt.Fprintf(&b, "  %-20s n=%-3d worst=%-10s violations at steps %v\n", k, n, worst, perKind[k])
	}
	t.write(&b, len(r.windows))
	fmt.Fprintf(&b, "  kernel drop counters that moved during the steady loop:\n%s", r.counters)
	r.logf("%s", b.String())
	AddReportEntry("churn figures", b.String())

	// See steadyTally.verdict for what fails the steady loop.
	steadyWhy := t.verdict()
	if len(violations) > 0 || len(steadyWhy) > 0 {
		Fail(fmt.Sprintf("%s\nreplay: %s=%d %s=%d\nviolations:\n  %s\nsteady loop:\n  %s\nsteady-loop failures:\n  %s\nsteady-loop errors:\n  %s\nsteps:\n%s",
			b.String(), churnSeedEnv, r.seed, churnStepsEnv, len(r.steps),
			strings.Join(violations, "\n  "), strings.Join(steadyWhy, "\n  "), strings.Join(t.failures, "\n  "), strings.Join(t.errs, "\n  "), r.stepList()))
	}
}
