package main

import (
	"os"
	"syscall"
	"testing"
	"time"
)

// TestEchoStops: the first SIGTERM starts the shutdown delay and leaves the server running; SIGINT, or a
// signal after that, stops it at once.
func TestEchoStops(t *testing.T) {
	for _, tc := range []struct {
		name                   string
		signals                []os.Signal
		wantShutdown, wantStop bool
	}{
		{"SIGTERM: shutdown delay", []os.Signal{syscall.SIGTERM}, true, false},
		{"SIGTERM twice: stop now", []os.Signal{syscall.SIGTERM, syscall.SIGTERM}, true, true},
		{"SIGTERM then SIGINT: stop now", []os.Signal{syscall.SIGTERM, syscall.SIGINT}, true, true},
		{"SIGINT: stop now", []os.Signal{syscall.SIGINT}, false, true},
		{"nothing", nil, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sigs := make(chan os.Signal, len(tc.signals))
			for _, s := range tc.signals {
				sigs <- s
			}
			ctx, shutdown := echoStops(sigs)
			closed := func(c <-chan struct{}) bool {
				select {
				case <-c:
					return true
				case <-time.After(200 * time.Millisecond):
					return false
				}
			}
			if got := closed(shutdown); got != tc.wantShutdown {
				t.Errorf("shutdown closed: %v, want %v", got, tc.wantShutdown)
			}
			if got := closed(ctx.Done()); got != tc.wantStop {
				t.Errorf("ctx done: %v, want %v", got, tc.wantStop)
			}
		})
	}
}
