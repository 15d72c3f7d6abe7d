package main

import (
	"flag"
	"io"
	"strings"
	"testing"
)

func TestParseFlags(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		wantErr string // a substring naming the flag and the fix; "" means valid
	}{
		{"minimal", []string{"--node-name=n1"}, ""},
		{"all options", []string{"--node-name=n1", "--scope=all", "--default-scheduler=lc", "--audit-period=30s", "--cluster-cidr=10.244.0.0/16, fd00:10:244::/56"}, ""},
		{"cleanup needs no node", []string{"--cleanup"}, ""},
		{"no node name", nil, "--node-name (or $NODE_NAME) is required"},
		{"bad scope", []string{"--node-name=n1", "--scope=some"}, `--scope="some": must be "labelled" or "all"`},
		{"bad scheduler", []string{"--node-name=n1", "--default-scheduler=fastest"}, `--default-scheduler="fastest": must be one of`},
		{"audit too often", []string{"--node-name=n1", "--audit-period=10ms"}, "--audit-period=10ms: must be at least 1s"},
		{"drift check off", []string{"--node-name=n1", "--drift-check-period=0"}, ""},
		{"drift check too often", []string{"--node-name=n1", "--drift-check-period=1ms"}, "--drift-check-period=1ms: must be 0 (off) or at least 100ms"},
		{"bad cidr", []string{"--node-name=n1", "--cluster-cidr=10.244.0.0"}, `--cluster-cidr: "10.244.0.0" is not a CIDR`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("NODE_NAME", "")
			fs := flag.NewFlagSet("agent", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			f, err := parseFlags(fs, tc.args)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if _, err := f.podCIDRs(); err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}
