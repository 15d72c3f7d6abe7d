package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ipvs-operator/ipvs-operator/controllers/agent/nodelock"
	"github.com/ipvs-operator/ipvs-operator/ipvs"
	"github.com/ipvs-operator/ipvs-operator/ipvs/syncer"
)

func testLockName(t *testing.T) {
	old := lockName
	lockName = fmt.Sprintf("ipvs-operator-test-%d-%s", os.Getpid(), t.Name())
	t.Cleanup(func() { lockName = old })
}

// A second agent on a node stops at the lock, before anything touches the kernel (on this machine, without
// IPVS, preparing the kernel would fail with another error).
func TestSecondAgentStopsAtTheLock(t *testing.T) {
	testLockName(t)
	l, err := nodelock.Acquire(lockName)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	err = run(context.Background(), flags{NodeName: "n1", Interface: "ipvs-test0", SysctlRoot: t.TempDir()})
	if !errors.Is(err, nodelock.ErrHeld) {
		t.Fatalf("run with the lock held: %v, want ErrHeld", err)
	}
	if want := fmt.Sprintf("another agent holds the per-node lock @%s (pid %d)", lockName, os.Getpid()); !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
}

// With an agent running, `agent --cleanup` asks it and prints its report; its failure is ours.
func TestCleanupAsksTheRunningAgent(t *testing.T) {
	testLockName(t)
	l, err := nodelock.Acquire(lockName)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var fail atomic.Bool
	go func() {
		_ = l.Serve(ctx, func(_ context.Context, cmd string) (string, error) {
			if cmd != cleanupCommand {
				return "", fmt.Errorf("unexpected command %q", cmd)
			}
			if fail.Load() {
				return "removed virtual server -t 10.96.0.10:80\n", errors.New("deleting -u 10.96.0.10:53: device or resource busy")
			}
			return "removed virtual server -t 10.96.0.10:80\n", nil
		})
	}()

	var out bytes.Buffer
	if err := runCleanup(ctx, flags{Interface: "ipvs0"}, &out); err != nil {
		t.Fatalf("runCleanup: %v\n%s", err, out.String())
	}
	for _, want := range []string{fmt.Sprintf("Asking the running agent (pid %d)", os.Getpid()), "removed virtual server -t 10.96.0.10:80\n", "stays halted"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}

	fail.Store(true)
	out.Reset()
	err = runCleanup(ctx, flags{Interface: "ipvs0"}, &out)
	if err == nil || !strings.Contains(err.Error(), "device or resource busy") {
		t.Errorf("runCleanup with a failing agent: %v", err)
	}
	if !strings.Contains(out.String(), "removed virtual server -t 10.96.0.10:80") {
		t.Errorf("what was removed before the failure is still printed:\n%s", out.String())
	}
}

func TestFormatRemoved(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   syncer.Removed
		want string
	}{
		{"everything", syncer.Removed{
			VirtualServers: []ipvs.ServiceKey{
				{Address: netip.MustParseAddr("10.96.0.10"), Port: 53, Protocol: ipvs.UDP},
				{Address: netip.MustParseAddr("10.96.0.10"), Port: 80, Protocol: ipvs.TCP},
			},
			VIPs:      []netip.Addr{netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("fd00:96::a")},
			Interface: true, Table: true,
		}, "removed virtual server -u 10.96.0.10:53\nremoved virtual server -t 10.96.0.10:80\n" +
			"removed interface ipvs0 with its 2 addresses: 10.96.0.10 fd00:96::a\nnftables table inet ipvs-operator is gone\n"},
		{"nothing left", syncer.Removed{Interface: true, Table: true},
			"no virtual server of the agent's was left\ninterface ipvs0 is gone\nnftables table inet ipvs-operator is gone\n"},
		{"failed before the interface", syncer.Removed{}, "no virtual server of the agent's was left\n"},
	} {
		if got := formatRemoved(tc.in, "ipvs0"); got != tc.want {
			t.Errorf("%s:\n%s\nwant\n%s", tc.name, got, tc.want)
		}
	}
}
