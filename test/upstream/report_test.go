package upstream

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

func TestParseSkipList(t *testing.T) {
	cases := []struct {
		name, in string
		want     int
		wantErr  bool
	}{
		{"entries and comments", "# header\n\nNodePort # no NodePort here\n\\[Disruptive\\] # ssh\n", 2, false},
		{"no reason", "NodePort\n", 0, true},
		{"empty reason", "NodePort # \n", 0, true},
		{"bad pattern", "Node(Port # oops\n", 0, true},
	}
	for _, c := range cases {
		got, err := ParseSkipList(strings.NewReader(c.in))
		if (err != nil) != c.wantErr || len(got) != c.want {
			t.Errorf("%s: ParseSkipList = %d entries, %v", c.name, len(got), err)
		}
	}
}

// The skip list the suite runs with parses, and every line says why.
func TestSkipListFile(t *testing.T) {
	f, err := os.Open("skip.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	entries, err := ParseSkipList(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) == 0 {
		t.Fatal("skip.txt has no entries")
	}
	if _, err := regexp.Compile(SkipRegexp(entries)); err != nil {
		t.Errorf("the combined skip expression does not compile: %v", err)
	}
}

const sampleJUnit = `<?xml version="1.0" encoding="UTF-8"?>
<testsuites tests="5" disabled="0" errors="0" failures="1" time="10">
  <testsuite name="Kubernetes e2e suite" package="/" tests="5" disabled="0" skipped="3" errors="0" failures="1" time="10">
    <testcase name="[SynchronizedBeforeSuite]" classname="Kubernetes e2e suite" status="passed" time="1"></testcase>
    <testcase name="[It] [sig-network] Services should serve a basic endpoint from pods [Conformance]" classname="Kubernetes e2e suite" status="passed" time="3"></testcase>
    <testcase name="[It] [sig-network] Services should be rejected when no endpoints exist" classname="Kubernetes e2e suite" status="failed" time="5">
      <failure type="failed">[FAILED] service reachable without endpoints
In [It] at: service.go:2450</failure>
    </testcase>
    <testcase name="[It] [sig-network] Services should be able to create a functioning NodePort service [Conformance]" classname="Kubernetes e2e suite" status="skipped" time="0"><skipped message="skipped"></skipped></testcase>
    <testcase name="[It] [sig-network] Services should work after restarting apiserver [Disruptive]" classname="Kubernetes e2e suite" status="skipped" time="0"><skipped message="skipped - Only supported for providers [gce gke]"></skipped></testcase>
    <testcase name="[It] [sig-network] Services should be able to up and down services" classname="Kubernetes e2e suite" status="skipped" time="0"><skipped message="skipped"></skipped></testcase>
    <testcase name="[It] [sig-storage] CSI should mount" classname="Kubernetes e2e suite" status="skipped" time="0"><skipped message="skipped"></skipped></testcase>
  </testsuite>
</testsuites>`

func TestSummarize(t *testing.T) {
	skips, err := ParseSkipList(strings.NewReader("NodePort # the agent serves ClusterIPs only\n"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := Summarize(strings.NewReader(sampleJUnit), regexp.MustCompile(`\[sig-network\] Services `), skips)
	if err != nil {
		t.Fatal(err)
	}
	if s.Ran != 2 || s.Passed != 1 || s.Failed != 1 || s.Skipped != 3 || len(s.Specs) != 5 {
		t.Fatalf("summary = %+v", s)
	}
	reasons := map[string]string{}
	for _, o := range s.Specs {
		reasons[o.Status+" "+o.Name] = o.Reason
	}
	for key, want := range map[string]string{
		"failed [sig-network] Services should be rejected when no endpoints exist":                             "failed: service reachable without endpoints",
		"skipped [sig-network] Services should be able to create a functioning NodePort service [Conformance]": "skip list: the agent serves ClusterIPs only",
		"skipped [sig-network] Services should work after restarting apiserver [Disruptive]":                   "the suite: Only supported for providers [gce gke]",
		"skipped [sig-network] Services should be able to up and down services":                                "not reached: the run ended first",
	} {
		if got := reasons[key]; got != want {
			t.Errorf("%s: reason %q, want %q", key, got, want)
		}
	}
	if _, err := Summarize(strings.NewReader(sampleJUnit), regexp.MustCompile(`nothing`), skips); err == nil {
		t.Error("a focus that selects nothing must be an error")
	}
}
