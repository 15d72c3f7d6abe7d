package main

import (
	"slices"

	"github.com/go-logr/logr"
)

// lazyValues wraps a logger so that WithValues costs nothing until a line is written. controller-runtime
// gives every reconcile a logger with the controller, the object and a reconcile ID, and zap encodes such
// values at once, into a copy of its encoder: on the agent, whose reconciles log only at V(1) or on error,
// that was 2-4% of its CPU (the 1,000- and 10,000-Service lab profiles), all for lines never written.
func lazyValues(l logr.Logger) logr.Logger {
	inner := l.GetSink() // initialised by l's logr.New
	if cd, ok := inner.(logr.CallDepthLogSink); ok {
		inner = cd.WithCallDepth(1) // the frame of lazySink's Info or Error
	}
	return logr.New(lazySink{inner: inner})
}

// lazySink keeps the values given to WithValues and hands them to the inner sink only when a line is
// written (logr asks Enabled first).
type lazySink struct {
	inner logr.LogSink
	kv    []any
}

var (
	_ logr.LogSink          = lazySink{}
	_ logr.CallDepthLogSink = lazySink{}
)

// Init does nothing: the inner sink was initialised by its own logger, and lazyValues accounted for the
// frame this sink adds.
func (l lazySink) Init(logr.RuntimeInfo) {}

func (l lazySink) Enabled(level int) bool { return l.inner.Enabled(level) }

func (l lazySink) Info(level int, msg string, kv ...any) { l.withValues().Info(level, msg, kv...) }

func (l lazySink) Error(err error, msg string, kv ...any) { l.withValues().Error(err, msg, kv...) }

func (l lazySink) WithValues(kv ...any) logr.LogSink {
	// Clip: two loggers derived from one must never share (and overwrite) the tail of its values.
	return lazySink{inner: l.inner, kv: append(slices.Clip(l.kv), kv...)}
}

func (l lazySink) WithName(name string) logr.LogSink {
	return lazySink{inner: l.inner.WithName(name), kv: l.kv}
}

func (l lazySink) WithCallDepth(depth int) logr.LogSink {
	if cd, ok := l.inner.(logr.CallDepthLogSink); ok {
		return lazySink{inner: cd.WithCallDepth(depth), kv: l.kv}
	}
	return l
}

func (l lazySink) withValues() logr.LogSink {
	if len(l.kv) == 0 {
		return l.inner
	}
	return l.inner.WithValues(l.kv...)
}
