package host

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
)

// aptLog turns apt-get's and dpkg's output into the lab's progress: the per-package lines ("Selecting
// previously unselected package", "Unpacking", "Setting up", "Get:", ...) are counted, not printed, and one
// summary line follows (summary); warnings, errors and anything not recognised pass through as they come,
// so a failure still shows its cause. `apt-get -qq` does not quiet dpkg, which prints those lines for
// every package.
type aptLog struct {
	out     io.Writer
	prefix  string
	partial []byte
	setUp   []string
	fetched string
}

// aptLineKind is what a line of apt-get or dpkg output is to the summary.
type aptLineKind int

const (
	aptPass     aptLineKind = iota // printed as it comes (warnings, errors, unknown lines)
	aptProgress                    // counted in the summary only
	aptSetUp                       // a package set up (dpkg's last step for it)
	aptFetched                     // apt's "Fetched N kB in Ns" total
)

// aptProgressPrefixes start the lines that only say how far apt or dpkg got.
var aptProgressPrefixes = []string{
	"Selecting previously unselected package", "Preparing to unpack", "Unpacking ", "Processing triggers for ",
	"(Reading database", "Reading package lists", "Building dependency tree", "Reading state information",
	"Get:", "Hit:", "Ign:", "debconf: ", "update-alternatives: ", "Created symlink", "Extracting templates",
	"Need to get", "After this operation", "The following ", "Suggested packages", "Recommended packages",
	"0 upgraded", "Setting up ",
}

// classifyAPTLine says what line is; for aptSetUp it also returns the package's name.
func classifyAPTLine(line string) (aptLineKind, string) {
	if rest, ok := strings.CutPrefix(line, "Setting up "); ok {
		name, _, _ := strings.Cut(rest, " ")
		name, _, _ = strings.Cut(name, ":") // curl:amd64
		return aptSetUp, name
	}
	if strings.HasPrefix(line, "Fetched ") {
		return aptFetched, strings.TrimPrefix(line, "Fetched ")
	}
	// apt lists packages indented under "The following NEW packages will be installed:".
	if strings.HasPrefix(line, "  ") && !strings.Contains(line, ":") {
		return aptProgress, ""
	}
	for _, p := range aptProgressPrefixes {
		if strings.HasPrefix(line, p) {
			return aptProgress, ""
		}
	}
	if strings.TrimSpace(line) == "" {
		return aptProgress, ""
	}
	return aptPass, ""
}

func (a *aptLog) Write(p []byte) (int, error) {
	a.partial = append(a.partial, p...)
	for {
		i := bytes.IndexByte(a.partial, '\n')
		if i < 0 {
			return len(p), nil
		}
		line := string(a.partial[:i])
		a.partial = a.partial[i+1:]
		switch kind, detail := classifyAPTLine(line); kind {
		case aptSetUp:
			a.setUp = append(a.setUp, detail)
		case aptFetched:
			a.fetched = detail
		case aptPass:
			if _, err := fmt.Fprintf(a.out, "%s%s\n", a.prefix, line); err != nil {
				return len(p), err
			}
		}
	}
}

// summary is the line that stands for the progress lines: the packages set up and the bytes fetched.
func (a *aptLog) summary() string {
	var parts []string
	if n := len(a.setUp); n > 0 {
		names := a.setUp
		if n > 8 {
			names = append(names[:8:8], fmt.Sprintf("and %d more", n-8))
		}
		parts = append(parts, fmt.Sprintf("%d packages set up (%s)", n, strings.Join(names, ", ")))
	}
	if a.fetched != "" {
		parts = append(parts, "fetched "+a.fetched)
	}
	if len(parts) == 0 {
		return ""
	}
	return a.prefix + strings.Join(parts, "; ")
}

// RunAPT runs apt-get with args, its output summarised on out (see aptLog).
func RunAPT(ctx context.Context, out io.Writer, args ...string) error {
	log := &aptLog{out: out, prefix: "  apt: "}
	if out == nil {
		log.out = io.Discard
	}
	err := RunStreaming(ctx, log, "", []string{"DEBIAN_FRONTEND=noninteractive"}, "", "apt-get", args...)
	if s := log.summary(); s != "" && out != nil {
		fmt.Fprintln(out, s)
	}
	return err
}
