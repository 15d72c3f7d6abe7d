package dataplane

import (
	"context"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"

	"k8s.io/apimachinery/pkg/types"
)

// The churn test's steady loop and its judgement.
//
// From the client pod on every node, back-to-back windows of requests go to the two steady Services (one
// TCP, one UDP), and, as controls, to each steady pod's own address over the same two protocols: the same
// paths (same node and across nodes) without IPVS in the way. Each steady protocol is judged against its own
// control: a UDP request that loses one datagram is lost, while TCP retransmits a lost segment within its
// timeout, so only a UDP control says what the emulated network does to UDP.

// churnControlSvc prefixes the control targets' names in steady windows: "control <proto> <pod IP>".
const churnControlSvc = "control"

// steadyProto is the protocol of each steady Service's requests.
var steadyProto = map[string]string{"steady-http": "http", "steady-dns": "udp"}

func isControl(service string) bool { return strings.HasPrefix(service, churnControlSvc+" ") }

// windowProto is the protocol a window's requests used.
func windowProto(service string) string {
	if isControl(service) {
		return strings.Fields(service)[1]
	}
	return steadyProto[service]
}

// startSteady runs the steady loop until stop is closed. The returned function waits for the last windows.
func (r *churnRun) startSteady(ctx context.Context, stop <-chan struct{}) func() {
	var wg sync.WaitGroup
	targets := map[string]request{
		"steady-http": {proto: "http", addr: hostPort(r.steadyIP["steady-http"], 80)},
		"steady-dns":  {proto: "udp", addr: hostPort(r.steadyIP["steady-dns"], 53)},
	}
	for _, ip := range r.steadyPodIPs {
		targets[churnControlSvc+" http "+ip] = request{proto: "http", addr: hostPort(ip, httpPort.port)}
		targets[churnControlSvc+" udp "+ip] = request{proto: "udp", addr: hostPort(ip, udpPort.port)}
	}
	for _, node := range r.nodes {
		for name, req := range targets {
			req.duration, req.interval, req.timeout = churnSteadyWindow, 100*time.Millisecond, churnSteadyTimeout
			pod := r.clients[node]
			wg.Go(func() {
				defer GinkgoRecover()
				for {
					select {
					case <-stop:
						return
					default:
					}
					w := steadyWindow{node: node, service: name, start: time.Now()}
					out, err := r.drv.PodExec(ctx, types.NamespacedName{Namespace: pod.Namespace, Name: pod.Name}, req.argv(r.drv)...)
					w.end = time.Now()
					if err == nil {
						w.out, err = parseOutcome(out)
					} else {
						err = fmt.Errorf("%w: %s", err, out)
					}
					w.err = err
					r.mu.Lock()
					r.windows = append(r.windows, w)
					r.mu.Unlock()
					if ctx.Err() != nil {
						return
					}
				}
			})
		}
	}
	return wg.Wait
}

// controlFailedDuring reports whether w failed only by timeouts while a control (on any node and over any
// protocol: a stall pauses the whole VM) failed in an overlapping window: a request that bypasses IPVS failed
// at about the same time, so the VM stalled (TCG emulation on a shared machine can pause it for over a
// second) and w's timeouts say nothing about the data path. A refused or reset request is never excused.
// The windows are coarse (churnSteadyWindow), so this can excuse a real timeout that happens to share a
// window with a stall; it is reported, never silently dropped.
func (r *churnRun) controlFailedDuring(w steadyWindow) bool {
	for _, res := range w.out.Sequence {
		if strings.HasPrefix(res, "ERR ") && res != "ERR timeout" {
			return false // refused or reset: IPVS answered wrongly, a stall never does that
		}
	}
	for _, c := range r.windows {
		if isControl(c.service) && c.out.Failed > 0 && c.start.Before(w.end) && w.start.Before(c.end) {
			return true
		}
	}
	return false
}

// rate is n/of, or 0 when of is 0.
func rate(n, of int) float64 {
	if of == 0 {
		return 0
	}
	return float64(n) / float64(of)
}

// loopCount is one loop's requests over one protocol.
type loopCount struct {
	ok, timeouts, hard int
	// bursts counts runs of two or more consecutive timeouts within a window: at one request per 100 ms
	// after the last answer or 1 s timeout, that is a path that stayed broken for over a second.
	bursts int
}

func (c *loopCount) add(o outcome) {
	c.ok += o.OK
	run := 0
	for _, res := range o.Sequence {
		switch {
		case res == "ERR timeout":
			run++
			if run == 2 {
				c.bursts++
			}
			continue
		case strings.HasPrefix(res, "ERR "):
			c.hard++
		}
		run = 0
	}
	c.timeouts += o.Failed - countHard(o)
}

func countHard(o outcome) int {
	n := 0
	for _, res := range o.Sequence {
		if strings.HasPrefix(res, "ERR ") && res != "ERR timeout" {
			n++
		}
	}
	return n
}

func (c loopCount) total() int { return c.ok + c.timeouts + c.hard }

// allowedTimeouts is how many isolated timeouts a steady loop of n requests may see when its control saw
// controlTimeouts of controlN: twice the control's rate, plus 2 (with a loss rate of about one request in
// a thousand, as measured, a run's count is small and Poisson-distributed: comparing 1 against 0 would fail
// a sound data path about every other run). A black-holed VIP is a burst and fails on its own; so does any
// refused or reset request.
func allowedTimeouts(n, controlTimeouts, controlN int) int {
	return int(math.Floor(2*rate(controlTimeouts, controlN)*float64(n))) + 2
}

// steadyTally is the steady and control loops' windows, classified for the report.
type steadyTally struct {
	steady, control                          map[string]*loopCount // by protocol
	excusedOK, excusedFailed, stalledFailed  int
	controlFailures, stalled, failures, errs []string
	excusedWhy                               map[string]int
}

// tallySteady sorts every window: control, excused by a drift step on the client's node, excused by a
// machine stall (controlFailedDuring), or counted.
func (r *churnRun) tallySteady() steadyTally {
	t := steadyTally{steady: map[string]*loopCount{}, control: map[string]*loopCount{}, excusedWhy: map[string]int{}}
	for _, p := range slices.Sorted(maps.Values(steadyProto)) {
		t.steady[p], t.control[p] = &loopCount{}, &loopCount{}
	}
	for _, w := range r.windows {
		span := fmt.Sprintf("%s -> %s window %s-%s: %s", w.node, w.service, w.start.Format("15:04:05.0"), w.end.Format("15:04:05.0"), w.out)
		if w.err != nil {
			t.errs = append(t.errs, fmt.Sprintf("%s -> %s at %s: %v", w.node, w.service, w.start.Format("15:04:05"), w.err))
			continue
		}
		if isControl(w.service) {
			t.control[windowProto(w.service)].add(w.out)
			if w.out.Failed > 0 {
				t.controlFailures = append(t.controlFailures, span)
			}
			continue
		}
		excused := false
		for _, d := range r.drifts {
			if d.node == w.node && w.start.Before(d.end) && d.start.Before(w.end) {
				excused = true
			}
		}
		if !excused && w.out.Failed > 0 && r.controlFailedDuring(w) {
			t.stalledFailed += w.out.Failed
			t.stalled = append(t.stalled, span)
			continue
		}
		if excused {
			t.excusedOK += w.out.OK
			t.excusedFailed += w.out.Failed
			for _, res := range w.out.Sequence {
				if reason, ok := strings.CutPrefix(res, "ERR "); ok {
					t.excusedWhy[w.service+" "+reason]++
				}
			}
			continue
		}
		t.steady[windowProto(w.service)].add(w.out)
		if w.out.Failed > 0 {
			t.failures = append(t.failures, span)
		}
	}
	return t
}

// write prints the tally.
func (t steadyTally) write(b *strings.Builder, windows int) {
	fmt.Fprintf(b, "  steady loop: during drift steps on the client's node (excused): ok=%d failed=%d %v; windows=%d\n",
		t.excusedOK, t.excusedFailed, t.excusedWhy, windows)
	fmt.Fprintf(b, "  steady failures in windows where a control failed too (the machine stalled, not IPVS): %d\n", t.stalledFailed)
	for _, l := range append(slices.Clone(t.controlFailures), t.stalled...) {
		fmt.Fprintf(b, "    %s\n", l)
	}
	for _, p := range slices.Sorted(maps.Keys(t.steady)) {
		s, c := t.steady[p], t.control[p]
		fmt.Fprintf(b, "  %s: steady ok=%d timeouts=%d (allowed %d) bursts=%d refused/reset=%d; control (pods' own addresses) ok=%d timeouts=%d refused/reset=%d\n",
			p, s.ok, s.timeouts, allowedTimeouts(s.total(), c.timeouts, c.total()), s.bursts, s.hard, c.ok, c.timeouts, c.hard)
	}
}

// verdict says why the steady loop fails the spec, if it does: a refused or reset request (IPVS had
// nothing, or the wrong thing, to send it to), a burst of timeouts, more isolated timeouts than the
// protocol's control explains, a control that was refused (the test's own set-up is broken), or a window
// the test could not run.
func (t steadyTally) verdict() []string {
	var why []string
	for _, p := range slices.Sorted(maps.Keys(t.steady)) {
		s, c := t.steady[p], t.control[p]
		if s.hard > 0 {
			why = append(why, fmt.Sprintf("%s: %d steady requests refused or reset", p, s.hard))
		}
		if s.bursts > 0 {
			why = append(why, fmt.Sprintf("%s: %d bursts of consecutive steady timeouts", p, s.bursts))
		}
		if allowed := allowedTimeouts(s.total(), c.timeouts, c.total()); s.timeouts > allowed {
			why = append(why, fmt.Sprintf("%s: %d steady timeouts, more than the %d the control's %d of %d explain", p, s.timeouts, allowed, c.timeouts, c.total()))
		}
		if c.hard > 0 {
			why = append(why, fmt.Sprintf("%s: %d control requests refused or reset (a steady pod is not serving)", p, c.hard))
		}
		if s.total() == 0 || c.total() == 0 {
			why = append(why, fmt.Sprintf("%s: no steady or no control request ran", p))
		}
	}
	if len(t.errs) > 0 {
		why = append(why, fmt.Sprintf("%d windows could not run", len(t.errs)))
	}
	return why
}
