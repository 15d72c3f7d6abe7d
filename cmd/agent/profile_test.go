//go:build benchprof

package main

import (
	"flag"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"testing"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
)

// TestAgentProfiled runs the agent itself, with the arguments in $AGENT_ARGS, until SIGTERM. The agent
// serves no pprof endpoint; the scale harness (test/bench, BENCH_PROFILE=1) builds this test binary
// (`go test -c -tags benchprof ./cmd/agent`) and runs it with -test.cpuprofile, so that a run at scale
// yields a profile of the real program on the real kernel. The heap is written to $AGENT_HEAP_PROFILE the
// moment SIGTERM arrives, while the caches and the engine's model are still alive: -test.memprofile would
// be written after run returned, when all of it is garbage.
func TestAgentProfiled(t *testing.T) {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	f, err := parseFlags(fs, strings.Fields(os.Getenv("AGENT_ARGS")), os.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	ctrl.SetLogger(lazyValues(zap.New()))
	ctx := ctrl.SetupSignalHandler()
	heapDone := make(chan struct{})
	go func() {
		defer close(heapDone)
		<-ctx.Done()
		if err := writeHeap(os.Getenv("AGENT_HEAP_PROFILE")); err != nil {
			t.Error(err)
		}
	}()
	if err := run(ctx, f); err != nil {
		t.Fatal(err)
	}
	<-heapDone
}

// writeHeap writes the live heap after a collection, as `go tool pprof -inuse_space` reads it.
func writeHeap(path string) error {
	if path == "" {
		return nil
	}
	runtime.GC()
	out, err := os.Create(filepath.Clean(path))
	if err != nil {
		return err
	}
	if err := pprof.Lookup("heap").WriteTo(out, 0); err != nil {
		_ = out.Close()
		return err
	}
	return out.Close()
}
