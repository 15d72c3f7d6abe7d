package dataplane

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

// Pure tests of the steady loop's judgement and the kernel counters it prints.

func seq(s ...string) outcome {
	o := outcome{Sequence: s}
	for _, r := range s {
		if strings.HasPrefix(r, "ERR ") {
			o.Failed++
		} else {
			o.OK++
		}
	}
	return o
}

func TestLoopCountAdd(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   outcome
		want loopCount
	}{
		{"all answered", seq("a", "b", "a"), loopCount{ok: 3}},
		{"isolated timeouts", seq("a", "ERR timeout", "b", "ERR timeout"), loopCount{ok: 2, timeouts: 2}},
		{"a burst", seq("a", "ERR timeout", "ERR timeout", "ERR timeout", "b"), loopCount{ok: 2, timeouts: 3, bursts: 1}},
		{"a refusal breaks a run and is hard", seq("ERR timeout", "ERR refused", "ERR timeout"), loopCount{timeouts: 2, hard: 1}},
		{"two bursts", seq("ERR timeout", "ERR timeout", "a", "ERR timeout", "ERR timeout"), loopCount{ok: 1, timeouts: 4, bursts: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c loopCount
			c.add(tc.in)
			if c != tc.want {
				t.Errorf("got %+v, want %+v", c, tc.want)
			}
		})
	}
}

func TestSteadyVerdict(t *testing.T) {
	window := func(node, service string, o outcome) steadyWindow {
		return steadyWindow{node: node, service: service, start: time.Unix(0, 0), end: time.Unix(10, 0), out: o}
	}
	answered := func(n int) outcome {
		s := make([]string, n)
		for i := range s {
			s[i] = "p"
		}
		return seq(s...)
	}
	withTimeouts := func(n, timeouts int) outcome {
		o := answered(n)
		for i := range timeouts {
			o.Sequence[i*3] = "ERR timeout" // isolated
		}
		return seq(o.Sequence...)
	}
	controls := []steadyWindow{
		window("a", "control http 10.0.0.1", answered(100)),
		window("a", "control udp 10.0.0.1", answered(100)),
	}
	for _, tc := range []struct {
		name    string
		windows []steadyWindow
		want    string // a substring of the verdict; "" when it passes
	}{
		{"clean", []steadyWindow{window("a", "steady-http", answered(100)), window("a", "steady-dns", answered(100))}, ""},
		{"two isolated UDP timeouts with a clean control pass", []steadyWindow{
			window("a", "steady-http", answered(100)), window("a", "steady-dns", withTimeouts(100, 2))}, ""},
		{"three isolated UDP timeouts with a clean control fail", []steadyWindow{
			window("a", "steady-http", answered(100)), window("a", "steady-dns", withTimeouts(100, 3))}, "udp: 3 steady timeouts, more than the 2"},
		{"a burst fails", []steadyWindow{
			window("a", "steady-http", seq("p", "ERR timeout", "ERR timeout", "p")), window("a", "steady-dns", answered(100))}, "http: 1 bursts"},
		{"a refusal fails", []steadyWindow{
			window("a", "steady-http", answered(100)), window("a", "steady-dns", seq("p", "ERR refused"))}, "udp: 1 steady requests refused"},
		{"a window that could not run fails", []steadyWindow{
			window("a", "steady-http", answered(100)), window("a", "steady-dns", answered(100)), {node: "a", service: "steady-dns", err: errExample}}, "1 windows could not run"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &churnRun{windows: append(append([]steadyWindow{}, controls...), tc.windows...)}
			// The controls' windows overlap every steady window; they answered, so nothing is excused.
			why := strings.Join(r.tallySteady().verdict(), "\n")
			if tc.want == "" && why != "" || tc.want != "" && !strings.Contains(why, tc.want) {
				t.Errorf("verdict %q, want %q", why, tc.want)
			}
		})
	}
}

// A control timeout in an overlapping window says the VM stalled: the steady timeouts of that window are
// reported apart, and a refusal never is.
func TestSteadyStallExcusesTimeoutsOnly(t *testing.T) {
	w := func(service string, o outcome) steadyWindow {
		return steadyWindow{node: "b", service: service, start: time.Unix(0, 0), end: time.Unix(10, 0), out: o}
	}
	r := &churnRun{windows: []steadyWindow{
		w("control udp 10.0.0.2", seq("p", "ERR timeout")),
		w("control http 10.0.0.2", seq("p")),
		w("steady-dns", seq("ERR timeout", "ERR timeout", "ERR timeout")),
		w("steady-http", seq("p", "ERR reset")),
		{node: "b", service: "steady-dns", start: time.Unix(20, 0), end: time.Unix(30, 0), out: seq("p")},
	}}
	tally := r.tallySteady()
	if tally.stalledFailed != 3 {
		t.Errorf("stalled = %d, want the 3 UDP timeouts", tally.stalledFailed)
	}
	why := strings.Join(tally.verdict(), "\n")
	if why != "http: 1 steady requests refused or reset" {
		t.Errorf("verdict %q", why)
	}
}

func TestAllowedTimeouts(t *testing.T) {
	for _, tc := range []struct{ n, ct, cn, want int }{
		{1500, 0, 1500, 2},
		{1500, 3, 1500, 8},
		{1500, 0, 0, 2},
	} {
		if got := allowedTimeouts(tc.n, tc.ct, tc.cn); got != tc.want {
			t.Errorf("allowedTimeouts(%d, %d, %d) = %d, want %d", tc.n, tc.ct, tc.cn, got, tc.want)
		}
	}
}

func TestParseCounters(t *testing.T) {
	text := `Ip: Forwarding DefaultTTL InReceives InHdrErrors InAddrErrors ForwDatagrams InUnknownProtos InDiscards
Ip: 1 64 100 0 2 50 0 7
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
Udp: 40 3 1 41 1 0 0 0 0
entries  clashres found new invalid ignore delete delete_list insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart
0000002a  00000000 00000000 00000000 00000005 00000000 00000000 00000000 00000000 00000001 00000000 00000000 00000000  00000000 00000000 00000000 00000000
0000002a  00000000 00000000 00000000 0000000a 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000  00000000 00000000 00000000 00000000
`
	got := parseCounters(text)
	for k, want := range map[string]int64{"Ip.InDiscards": 7, "Ip.InAddrErrors": 2, "Udp.NoPorts": 3, "Udp.RcvbufErrors": 1,
		"conntrack.invalid": 15, "conntrack.insert_failed": 1} {
		if got[k] != want {
			t.Errorf("%s = %d, want %d (all: %v)", k, got[k], want, got)
		}
	}
	before := counterSnapshot{"node a": {"Udp.InErrors": 0, "Ip.InDiscards": 7}}
	after := counterSnapshot{"node a": {"Udp.InErrors": 2, "Ip.InDiscards": 7}, "node b": {"Udp.InErrors": 9}}
	d := after.minus(before)
	if !reflect.DeepEqual(d, counterSnapshot{"node a": {"Udp.InErrors": 2, "Ip.InDiscards": 0}}) {
		t.Errorf("minus = %v", d)
	}
	if s := d.String(); s != "    node a: Udp.InErrors=+2\n" {
		t.Errorf("String = %q", s)
	}
}

var errExample = errString("exec failed")

type errString string

func (e errString) Error() string { return string(e) }
