package main

import (
	"bytes"
	"errors"
	"io"
	"regexp"
	"testing"

	"github.com/go-logr/logr"
	uberzap "go.uber.org/zap"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
)

// timestamps differ between two runs of the same lines.
var timestamps = regexp.MustCompile(`"ts":"[^"]*"`)

// TestLazyValuesWritesTheSameLines: what the agent logs through lazyValues is what the zap logger writes on
// its own: names, values (also of two loggers derived from one), errors, the caller, and V levels.
func TestLazyValuesWritesTheSameLines(t *testing.T) {
	write := func(log logr.Logger) {
		log = log.WithName("service").WithValues("controller", "service")
		a := log.WithValues("Service", klog.KRef("ns", "a"))
		b := log.WithValues("Service", klog.KRef("ns", "b")) // must not overwrite a's values
		a.Info("Programmed Service", "kernelOps", 3)
		b.WithName("inner").Error(errors.New("boom"), "Failed", "n", 1)
		a.V(1).Info("Not written at the default level")
		logr.FromContextOrDiscard(logr.NewContext(t.Context(), a)).Info("Through a context")
	}
	var eager, lazy bytes.Buffer
	// The agent's default (JSON, info level), with the caller, which the sink's extra frame must not shift.
	for _, log := range []logr.Logger{
		zap.New(zap.WriteTo(&eager), zap.RawZapOpts(uberzap.AddCaller())),
		lazyValues(zap.New(zap.WriteTo(&lazy), zap.RawZapOpts(uberzap.AddCaller()))),
	} {
		write(log) // one line for both: the error's stack trace names it
	}
	got, want := timestamps.ReplaceAllString(lazy.String(), ""), timestamps.ReplaceAllString(eager.String(), "")
	if got != want {
		t.Errorf("lazy logger wrote\n%s\nthe zap logger\n%s", got, want)
	}
	if !bytes.Contains(eager.Bytes(), []byte("lazylog_test.go")) || bytes.Count(eager.Bytes(), []byte("\n")) != 3 {
		t.Fatalf("the reference output lacks the caller or has the wrong lines:\n%s", eager.String())
	}
}

// BenchmarkReconcileLogger is what controller-runtime does to the logger of every reconcile (the object's
// values, then a reconcile ID), followed by the agent's V(1) line, which is off by default.
func BenchmarkReconcileLogger(b *testing.B) {
	base := zap.New(zap.WriteTo(io.Discard))
	for _, c := range []struct {
		name string
		log  logr.Logger
	}{{"eager", base}, {"lazy", lazyValues(base)}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			req := types.NamespacedName{Namespace: "bench", Name: "svc-1"}
			for b.Loop() {
				log := c.log.WithValues("controller", "service", "controllerGroup", "", "controllerKind", "Service",
					"Service", klog.KRef(req.Namespace, req.Name), "namespace", req.Namespace, "name", req.Name)
				log = log.WithValues("reconcileID", "0b5cf2a4-7a8e-4f3c-9d0e-3a1f6c2b8e71")
				log.V(1).Info("Programmed Service", "service", req, "kernelOps", 6)
			}
		})
	}
}
