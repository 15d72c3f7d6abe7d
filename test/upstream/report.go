// Package upstream runs Kubernetes' own sig-network e2e specs (e2e.test of k8s.io/kubernetes, built by
// hack/build-kube-e2e.sh) against the lab, with the agents serving every Service and no kube-proxy. This
// file holds the pure parts: the skip list and the summary of the suite's JUnit report; upstream_test.go
// (build tag lab) starts the lab and runs the suite.
package upstream

import (
	"bufio"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"
)

// SkipEntry is one line of the skip list: specs whose full text matches Pattern are not run, for Reason.
type SkipEntry struct {
	Pattern string
	Reason  string
	re      *regexp.Regexp
}

// ParseSkipList reads "PATTERN # REASON" lines ('#' lines and blank lines are comments). Every entry must
// say why: a skip without a reason is an error, so that the list cannot grow silently.
func ParseSkipList(r io.Reader) ([]SkipEntry, error) {
	var out []SkipEntry
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		pattern, reason, _ := strings.Cut(line, " # ")
		pattern, reason = strings.TrimSpace(pattern), strings.TrimSpace(reason)
		if reason == "" {
			return nil, fmt.Errorf("skip list line %d: %q has no ' # reason'", n, pattern)
		}
		re, err := regexp.Compile(pattern)
		if err != nil {
			return nil, fmt.Errorf("skip list line %d: %w", n, err)
		}
		out = append(out, SkipEntry{Pattern: pattern, Reason: reason, re: re})
	}
	return out, sc.Err()
}

// SkipRegexp is the skip list as one --ginkgo.skip expression.
func SkipRegexp(entries []SkipEntry) string {
	parts := make([]string, len(entries))
	for i, e := range entries {
		parts[i] = "(" + e.Pattern + ")"
	}
	return strings.Join(parts, "|")
}

// Outcome of one spec in a Summary.
type Outcome struct {
	Name   string
	Status string // passed, failed, skipped
	// Reason: the skip list's reason, the suite's own skip message, or the failure's first line.
	Reason string
}

// Summary counts the specs of one run that the focus selected: Ran = Passed + Failed; Skipped are the
// focused specs that did not run, by the skip list or by the suite itself (e.g. "requires a provider").
type Summary struct {
	Ran, Passed, Failed, Skipped int
	Specs                        []Outcome
}

type junitSuites struct {
	Suites []struct {
		Cases []junitCase `xml:"testcase"`
	} `xml:"testsuite"`
}

type junitCase struct {
	Name    string `xml:"name,attr"`
	Status  string `xml:"status,attr"`
	Skipped *struct {
		Message string `xml:"message,attr"`
	} `xml:"skipped"`
	Failure *struct {
		Message string `xml:"message,attr"`
		Text    string `xml:",chardata"`
	} `xml:"failure"`
	Error *struct {
		Message string `xml:"message,attr"`
		Text    string `xml:",chardata"`
	} `xml:"error"`
}

// Summarize reads e2e.test's JUnit report (junit_01.xml) and keeps the specs focus selects: the report lists
// every spec of the suite, the thousands the focus filtered out among them.
func Summarize(r io.Reader, focus *regexp.Regexp, skips []SkipEntry) (Summary, error) {
	var doc junitSuites
	if err := xml.NewDecoder(r).Decode(&doc); err != nil {
		return Summary{}, fmt.Errorf("reading the JUnit report: %w", err)
	}
	var s Summary
	for _, suite := range doc.Suites {
		for _, c := range suite.Cases {
			name, ok := strings.CutPrefix(c.Name, "[It] ")
			if !ok || !focus.MatchString(name) {
				continue // suite setup nodes, and specs outside the focus
			}
			o := Outcome{Name: name}
			switch c.Status {
			case "passed":
				o.Status = "passed"
				s.Passed++
			case "skipped", "pending":
				o.Status = "skipped"
				s.Skipped++
				o.Reason = skipReason(name, skips)
				if o.Reason == "" && c.Skipped != nil {
					if msg, ok := strings.CutPrefix(c.Skipped.Message, "skipped - "); ok {
						o.Reason = "the suite: " + msg
					} else {
						// A bare "skipped": the run ended (suite timeout, interrupt) before the spec.
						o.Reason = "not reached: the run ended first"
					}
				}
			default: // failed, panicked, timedout, interrupted, aborted
				o.Status = "failed"
				s.Failed++
				o.Reason = c.Status + ": " + failureLine(c)
			}
			s.Specs = append(s.Specs, o)
		}
	}
	s.Ran = s.Passed + s.Failed
	if s.Ran+s.Skipped == 0 {
		return s, errors.New("the JUnit report has no spec that the focus selects")
	}
	sort.Slice(s.Specs, func(i, j int) bool { return s.Specs[i].Name < s.Specs[j].Name })
	return s, nil
}

func skipReason(name string, skips []SkipEntry) string {
	for _, e := range skips {
		if e.re.MatchString(name) {
			return "skip list: " + e.Reason
		}
	}
	return ""
}

func failureLine(c junitCase) string {
	text := ""
	switch {
	case c.Failure != nil:
		text = c.Failure.Message + "\n" + c.Failure.Text
	case c.Error != nil:
		text = c.Error.Message + "\n" + c.Error.Text
	}
	for _, l := range strings.Split(text, "\n") {
		if l = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(l), "[FAILED]")); l != "" {
			if len(l) > 200 {
				l = l[:200] + "..."
			}
			return l
		}
	}
	return ""
}

// Write prints the summary: the counts, then one line per spec.
func (s Summary) Write(w io.Writer) {
	fmt.Fprintf(w, "upstream e2e: ran %d, passed %d, failed %d, skipped %d\n", s.Ran, s.Passed, s.Failed, s.Skipped)
	for _, o := range s.Specs {
		if o.Reason != "" {
			fmt.Fprintf(w, "  %-7s %s\n          (%s)\n", o.Status, o.Name, o.Reason)
		} else {
			fmt.Fprintf(w, "  %-7s %s\n", o.Status, o.Name)
		}
	}
}
