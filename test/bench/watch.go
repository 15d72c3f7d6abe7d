//go:build lab

package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/ipvs-operator/ipvs-operator/test/bench/linetail"
	"github.com/ipvs-operator/ipvs-operator/test/lab"
)

// kernelWatch is the host's side of `benchvm watch`, which runs in a node's network namespace and answers
// when a kernel condition holds. Commands go through a file of the lab's share, answers come back through
// another; the host notes the time it SEES an answer, so every latency is measured with the host's clock
// alone (the guest's clock is never compared with it). The answer's trip through the share and the
// watcher's polling add a few milliseconds to each figure.
type kernelWatch struct {
	cmd      *os.File
	outPath  string
	guestDir string
	hostDir  string
	pid      int
	// fullCmd and flipCmd are the watch commands of the proxy's dataplane.
	fullCmd, flipCmd string

	mu      sync.Mutex
	seq     int
	waiting map[string]chan answer
	stop    chan struct{}
}

type answer struct {
	ok     bool
	fields map[string]string
	text   string
	seen   time.Time
}

const shareBenchDir = "bench"

// startWatch starts a watcher for one proxy's run; its files are the run's own (name), so that a watcher
// of an earlier run that is still ending can never answer for this one.
func startWatch(ctx context.Context, l *lab.Lab, node, name string, dp Dataplane) (*kernelWatch, error) {
	hostDir := filepath.Join(l.ShareDir(), shareBenchDir)
	if err := os.MkdirAll(hostDir, 0o755); err != nil {
		return nil, err
	}
	w := &kernelWatch{hostDir: hostDir, guestDir: lab.GuestShare + "/" + shareBenchDir,
		outPath: filepath.Join(hostDir, "out-"+node+"-"+name), waiting: map[string]chan answer{}, stop: make(chan struct{})}
	w.fullCmd, w.flipCmd = dp.watchCommands()
	var err error
	if w.cmd, err = os.OpenFile(filepath.Join(hostDir, "cmd-"+node+"-"+name), os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(w.outPath, nil, 0o644); err != nil {
		return nil, err
	}
	w.pid, err = l.Background(ctx, node, lab.GuestLogs+"/bench-watch-"+node+"-"+name+".log", lab.GuestBin+"/benchvm", "watch",
		"--cmd", w.guestDir+"/cmd-"+node+"-"+name, "--out", w.guestDir+"/out-"+node+"-"+name)
	if err != nil {
		return nil, err
	}
	go w.tail()
	return w, nil
}

// tail reads the answers as the watcher appends them.
func (w *kernelWatch) tail() {
	answers := &linetail.Tail{Path: w.outPath}
	for {
		select {
		case <-w.stop:
			return
		case <-time.After(time.Millisecond):
		}
		lines, _ := answers.Lines() // not there yet, or a short read: the next round reads on
		now := time.Now()
		for _, f := range lines {
			if len(f) < 2 {
				continue
			}
			a := answer{ok: f[1] == "ok", fields: map[string]string{}, text: strings.Join(f, " "), seen: now}
			for _, kv := range f[2:] {
				k, v, _ := strings.Cut(kv, "=")
				a.fields[k] = v
			}
			w.mu.Lock()
			ch := w.waiting[f[0]]
			delete(w.waiting, f[0])
			w.mu.Unlock()
			if ch != nil {
				ch <- a
			}
		}
	}
}

// send appends a command and returns the channel its answer arrives on.
func (w *kernelWatch) send(kind string, fields ...any) (<-chan answer, error) {
	w.mu.Lock()
	w.seq++
	id := fmt.Sprintf("%s-%d", kind, w.seq)
	ch := make(chan answer, 1)
	w.waiting[id] = ch
	w.mu.Unlock()
	line := kind + " " + id
	for _, f := range fields {
		line += " " + fmt.Sprint(f)
	}
	if _, err := w.cmd.WriteString(line + "\n"); err != nil {
		return nil, err
	}
	return ch, nil
}

// await waits for an answer.
func await(ctx context.Context, ch <-chan answer, timeout time.Duration, what string) (answer, error) {
	select {
	case a := <-ch:
		if !a.ok {
			return a, fmt.Errorf("bench: %s: %s", what, a.text)
		}
		return a, nil
	case <-time.After(timeout):
		return answer{}, fmt.Errorf("bench: %s: no answer within %s", what, timeout)
	case <-ctx.Done():
		return answer{}, ctx.Err()
	}
}

// ask sends a command and waits for its answer.
func (w *kernelWatch) ask(ctx context.Context, timeout time.Duration, kind string, fields ...any) (answer, error) {
	ch, err := w.send(kind, fields...)
	if err != nil {
		return answer{}, err
	}
	return await(ctx, ch, timeout, kind+fmt.Sprint(fields...))
}

func (w *kernelWatch) close(ctx context.Context, l *lab.Lab) {
	close(w.stop)
	_ = w.cmd.Close()
	_ = l.Kill(ctx, w.pid)
}
