package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"time"

	"github.com/ipvs-operator/ipvs-operator/test/lab/echo"
)

// ConnsResult is what conns prints: every request's latency in microseconds, in order, and the failures.
type ConnsResult struct {
	Requests  int     `json:"requests"`
	Errors    int     `json:"errors"`
	Seconds   float64 `json:"seconds"`
	Latencies []int64 `json:"latenciesMicros"`
	// FirstError is the reason of the first failure ("" if none).
	FirstError string `json:"firstError,omitempty"`
}

// conns runs the lab's echo client over TCP for --duration, one new connection per request (connect, send a
// line, read the server's name, close), one after the other, and prints each request's latency: the data
// path through whatever serves ADDR, as a pod of the node sees it.
func conns(args []string) error {
	fs := flag.NewFlagSet("conns", flag.ContinueOnError)
	duration := fs.Duration("duration", 10*time.Second, "how long to send requests")
	timeout := fs.Duration("timeout", 2*time.Second, "per-request timeout")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("conns: exactly one ADDR (host:port)")
	}
	res := ConnsResult{}
	var firstErr string
	last := time.Now()
	start := last
	cfg := echo.ClientConfig{Proto: echo.ProtocolTCP, Addr: fs.Arg(0), Duration: *duration, Timeout: *timeout,
		// Requests are sequential: a request's latency is the time since the last one ended.
		OnResult: func(r echo.Result) {
			now := time.Now()
			if r.Err != "" {
				if firstErr == "" {
					firstErr = r.Err
				}
				res.Errors++
			} else {
				res.Latencies = append(res.Latencies, now.Sub(last).Microseconds())
			}
			last = now
		}}
	if err := cfg.Validate(); err != nil {
		return err
	}
	rs := echo.Client(context.Background(), cfg)
	res.Seconds = time.Since(start).Seconds()
	res.Requests, res.FirstError = len(rs), firstErr
	return json.NewEncoder(os.Stdout).Encode(res)
}
