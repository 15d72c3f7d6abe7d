package dataplane

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	corev1 "k8s.io/api/core/v1"
)

// outcome is what the echo client printed for a run of requests.
type outcome struct {
	OK, Failed int
	// Answers counts successful answers per answering pod.
	Answers map[string]int
	// Sequence is every request's result in order: a pod name, or "ERR <reason>".
	Sequence []string
	Raw      string
}

// String summarises the run and lists every failed request with its position and reason, so that a failure
// says what kind it was (refused: nothing to serve it; timeout: lost on the way; reset: killed mid-way).
func (o outcome) String() string {
	var errs []string
	for i, r := range o.Sequence {
		if strings.HasPrefix(r, "ERR") {
			errs = append(errs, fmt.Sprintf("#%d %s", i+1, r))
		}
	}
	return fmt.Sprintf("ok=%d failed=%d answers=%v errors=%v", o.OK, o.Failed, o.Answers, errs)
}

// parseOutcome reads the client's output: "OK <name>" / "ERR <reason>" lines, then a SUMMARY line.
func parseOutcome(out string) (outcome, error) {
	o := outcome{Answers: map[string]int{}, Raw: out}
	summary := false
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 2 && f[0] == "OK":
			o.Sequence = append(o.Sequence, f[1])
		case len(f) >= 1 && f[0] == "ERR":
			o.Sequence = append(o.Sequence, line)
		case len(f) == 3 && f[0] == "SUMMARY":
			summary = true
			for _, kv := range f[1:] {
				k, v, _ := strings.Cut(kv, "=")
				n, err := strconv.Atoi(v)
				if err != nil {
					return o, fmt.Errorf("bad summary %q", line)
				}
				if k == "ok" {
					o.OK = n
				} else {
					o.Failed = n
				}
			}
		case len(f) == 3 && f[0] == "COUNT":
			n, err := strconv.Atoi(f[2])
			if err != nil {
				return o, fmt.Errorf("bad count %q", line)
			}
			o.Answers[f[1]] = n
		}
	}
	if !summary {
		return o, fmt.Errorf("no SUMMARY line in client output:\n%s", out)
	}
	return o, nil
}

// request describes a run of the echo client.
type request struct {
	proto    string // http, tcp, udp
	addr     string // host:port
	count    int
	interval time.Duration
	duration time.Duration
	timeout  time.Duration
	hold     time.Duration
	srcPort  int
	token    string // http: a bearer token
}

func (r request) argv(drv Driver) []string {
	argv := append([]string{}, drv.ClientCommand()...)
	proto := r.proto
	if proto == "" {
		proto = "http"
	}
	argv = append(argv, "--proto="+proto)
	if r.duration > 0 {
		argv = append(argv, "--duration="+r.duration.String())
	} else {
		count := r.count
		if count == 0 {
			count = 1
		}
		argv = append(argv, "--count="+strconv.Itoa(count))
	}
	if r.interval > 0 {
		argv = append(argv, "--interval="+r.interval.String())
	}
	timeout := r.timeout
	if timeout == 0 {
		timeout = 2 * time.Second
	}
	argv = append(argv, "--timeout="+timeout.String())
	if r.hold > 0 {
		argv = append(argv, "--hold="+r.hold.String())
	}
	if r.srcPort > 0 {
		argv = append(argv, "--source-port="+strconv.Itoa(r.srcPort))
	}
	if r.token != "" {
		argv = append(argv, "--bearer-token="+r.token)
	}
	return append(argv, r.addr)
}

// fromPod runs the client in a pod.
func fromPod(ctx context.Context, drv Driver, pod *corev1.Pod, r request) outcome {
	out, err := drv.PodExec(ctx, types.NamespacedName{Namespace: pod.Namespace, Name: pod.Name}, r.argv(drv)...)
	Expect(err).NotTo(HaveOccurred(), "client in pod %s: %s", client.ObjectKeyFromObject(pod), out)
	o, err := parseOutcome(out)
	Expect(err).NotTo(HaveOccurred())
	return o
}

// fromNode runs the client in a node's host network namespace.
func fromNode(ctx context.Context, drv Driver, node string, r request) outcome {
	out, err := drv.NodeExec(ctx, node, r.argv(drv)...)
	Expect(err).NotTo(HaveOccurred(), "client on node %s: %s", node, out)
	o, err := parseOutcome(out)
	Expect(err).NotTo(HaveOccurred())
	return o
}

// fromOutside runs the client on the host that is not part of the cluster.
func fromOutside(ctx context.Context, drv Driver, r request) outcome {
	out, err := drv.OutsideExec(ctx, r.argv(drv)...)
	Expect(err).NotTo(HaveOccurred(), "client outside the cluster: %s", out)
	o, err := parseOutcome(out)
	Expect(err).NotTo(HaveOccurred())
	return o
}

// background runs f in a goroutine and returns a function that waits for its result. A failed assertion in
// f fails the spec (GinkgoRecover) instead of crashing the suite; the waiter then returns T's zero value.
func background[T any](f func() T) func() T {
	ch := make(chan T, 1)
	go func() {
		defer close(ch)
		defer GinkgoRecover()
		ch <- f()
	}()
	return func() T { return <-ch }
}
