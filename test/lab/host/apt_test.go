package host

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

// Output of `apt-get install -y -qq --no-install-recommends curl conntrack` on Debian 12, shortened.
const aptInstallOutput = `debconf: delaying package configuration, since apt-utils is not installed
Selecting previously unselected package libcurl4:amd64.
(Reading database ... 12345 files and directories currently installed.)
Preparing to unpack .../libcurl4_7.88.1-10+deb12u8_amd64.deb ...
Unpacking libcurl4:amd64 (7.88.1-10+deb12u8) ...
Selecting previously unselected package curl.
Preparing to unpack .../curl_7.88.1-10+deb12u8_amd64.deb ...
Unpacking curl (7.88.1-10+deb12u8) ...
Selecting previously unselected package conntrack.
Unpacking conntrack (1:1.4.7-1+b2) ...
Setting up libcurl4:amd64 (7.88.1-10+deb12u8) ...
Setting up curl (7.88.1-10+deb12u8) ...
Setting up conntrack (1:1.4.7-1+b2) ...
W: Some index files failed to download. They have been ignored, or old ones used instead.
Processing triggers for libc-bin (2.36-9+deb12u9) ...
Fetched 1,234 kB in 1s (1,100 kB/s)
`

func TestAPTLogSummarisesProgress(t *testing.T) {
	var out bytes.Buffer
	log := &aptLog{out: &out, prefix: "  apt: "}
	// Written in odd pieces, as a pipe delivers them.
	for i := 0; i < len(aptInstallOutput); i += 7 {
		_, _ = log.Write([]byte(aptInstallOutput[i:min(i+7, len(aptInstallOutput))]))
	}
	want := "  apt: W: Some index files failed to download. They have been ignored, or old ones used instead.\n"
	if out.String() != want {
		t.Errorf("passed through:\n%q\nwant only the warning:\n%q", out.String(), want)
	}
	if got, want := log.summary(), "  apt: 3 packages set up (libcurl4, curl, conntrack); fetched 1,234 kB in 1s (1,100 kB/s)"; got != want {
		t.Errorf("summary = %q, want %q", got, want)
	}
}

func TestAPTLogSummaryNamesAtMostEight(t *testing.T) {
	log := &aptLog{prefix: "apt: "}
	var in strings.Builder
	for i := 0; i < 10; i++ {
		fmt.Fprintf(&in, "Setting up p%d (1.0) ...\n", i)
	}
	log.out = &bytes.Buffer{}
	_, _ = log.Write([]byte(in.String()))
	if got, want := log.summary(), "apt: 10 packages set up (p0, p1, p2, p3, p4, p5, p6, p7, and 2 more)"; got != want {
		t.Errorf("summary = %q, want %q", got, want)
	}
	if (&aptLog{}).summary() != "" {
		t.Error("nothing set up or fetched: no summary line")
	}
}

func TestClassifyAPTLine(t *testing.T) {
	for _, c := range []struct {
		line string
		kind aptLineKind
	}{
		{"E: Unable to locate package nosuch", aptPass},
		{"Err:1 http://deb.example bookworm InRelease", aptPass},
		{"Get:1 http://deb.example bookworm/main amd64 curl amd64 7.88.1 [315 kB]", aptProgress},
		{"  curl libcurl4", aptProgress},
		{"Setting up curl (7.88.1) ...", aptSetUp},
		{"dpkg: error processing package x (--configure):", aptPass},
	} {
		if got, _ := classifyAPTLine(c.line); got != c.kind {
			t.Errorf("classifyAPTLine(%q) = %d, want %d", c.line, got, c.kind)
		}
	}
}
