//go:build benchprof

package main

import (
	"flag"
	"os"
	"strings"
	"testing"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
)

// TestAgentProfiled runs the agent itself, with the arguments in $AGENT_ARGS, until SIGTERM. The agent
// serves no pprof endpoint; the scale harness (test/bench, BENCH_PROFILE=1) builds this test binary
// (`go test -c -tags benchprof ./cmd/agent`) and runs it with -test.cpuprofile and -test.memprofile, so
// that a run at scale yields a profile of the real program on the real kernel.
func TestAgentProfiled(t *testing.T) {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	f, err := parseFlags(fs, strings.Fields(os.Getenv("AGENT_ARGS")), os.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	ctrl.SetLogger(zap.New())
	if err := run(ctrl.SetupSignalHandler(), f); err != nil {
		t.Fatal(err)
	}
}
