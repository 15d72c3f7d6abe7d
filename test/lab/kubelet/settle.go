package kubelet

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// A container is reported running once its program has settled: every thread of its process and of the
// process's descendants waits (for a socket, a timer, a child) in two polls in a row. A kubelet reports a
// container running as soon as its PLEG notices the start, up to a second later, and on hardware a program
// such as agnhost test-webserver listens within milliseconds, so a pod without a readiness probe never looks
// ready before it serves. Under the lab's emulated CPU the same program takes a second or more to start
// (its 64 MB binary paged in, its package initialisers run 20-50x slower), while the lab kubelet noticed the
// start at once: upstream's "should be able to reach pod on ipv4 and ipv6 ip" then dialled a pod reported
// ready before it listened, and was refused. Waiting for the program to settle restores the order a real
// node shows, and bounds the wait for one that never does.
const (
	settleTimeout = 5 * time.Second
	settlePoll    = 20 * time.Millisecond
)

// waitSettled waits until the process tree at pid has settled (see above) or exited, until timeout has
// passed, or until ctx ends or terminating closes. It reports whether the tree settled (an exit counts).
func waitSettled(ctx context.Context, procDir string, pid int, timeout time.Duration, terminating <-chan struct{}) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(settlePoll)
	defer tick.Stop()
	quiet := 0
	for {
		if treeWaiting(procDir, pid) {
			quiet++
			if quiet == 2 {
				return true
			}
		} else {
			quiet = 0
		}
		select {
		case <-tick.C:
		case <-deadline.C:
			return false
		case <-ctx.Done():
			return false
		case <-terminating:
			return false
		}
	}
}

// treeWaiting reports whether no thread of pid or of its descendants runs or waits for the disk. A process
// that is gone or a zombie counts as waiting: there is nothing left to wait for.
func treeWaiting(procDir string, pid int) bool {
	tasks, err := os.ReadDir(filepath.Join(procDir, strconv.Itoa(pid), "task"))
	if err != nil {
		return true
	}
	for _, t := range tasks {
		dir := filepath.Join(procDir, strconv.Itoa(pid), "task", t.Name())
		stat, err := os.ReadFile(filepath.Join(dir, "stat"))
		if err != nil {
			continue
		}
		if !threadWaiting(stat) {
			return false
		}
		children, err := os.ReadFile(filepath.Join(dir, "children"))
		if err != nil {
			continue
		}
		for _, c := range strings.Fields(string(children)) {
			if child, err := strconv.Atoi(c); err == nil && !treeWaiting(procDir, child) {
				return false
			}
		}
	}
	return true
}

// threadWaiting reads a thread's state from its /proc stat line ("pid (comm) S ..."; comm may hold spaces and
// parentheses, so the state follows the last ')'): R (running), D (disk) and W (waking) are busy, every other
// state waits or is over.
func threadWaiting(stat []byte) bool {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 || i+2 >= len(stat) {
		return true
	}
	switch stat[i+2] {
	case 'R', 'D', 'W':
		return false
	}
	return true
}
