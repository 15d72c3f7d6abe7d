package kubelet

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

// A container's log file holds every process the supervisor started for it, each run opened by a
// "=== <time> lab kubelet: starting ..." line and closed by "=== <time> lab kubelet: exited ..." (see
// supervisor.runOnce). `kubectl logs` shows the current run, `--previous` the one before, as a kubelet
// shows the current and the previous container instance.

var (
	runStartMarker = []byte(" lab kubelet: starting ")
	runEndMarker   = []byte(" lab kubelet: exited ")
)

// errNoPrevious is what `kubectl logs --previous` gets for a container that never restarted.
var errNoPrevious = errors.New("previous terminated container not found")

// markerKind tells whether a log line is one of the supervisor's own.
func markerKind(line []byte) (start, end bool) {
	if !bytes.HasPrefix(line, []byte("=== ")) {
		return false, false
	}
	return bytes.Contains(line, runStartMarker), bytes.Contains(line, runEndMarker)
}

// logRun is one process's output within the log file.
type logRun struct {
	Lines [][]byte // with their newlines, markers left out
	Ended bool     // its "exited" marker was seen
}

// splitRuns splits a container log into its processes' runs. Output before the first start marker (none
// is expected) counts as a run of its own.
func splitRuns(data []byte) []logRun {
	var runs []logRun
	for len(data) > 0 {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line = data[:i+1]
		}
		data = data[len(line):]
		start, end := markerKind(line)
		switch {
		case start:
			runs = append(runs, logRun{})
		case end:
			if len(runs) > 0 {
				runs[len(runs)-1].Ended = true
			}
		default:
			if len(runs) == 0 {
				runs = append(runs, logRun{})
			}
			runs[len(runs)-1].Lines = append(runs[len(runs)-1].Lines, line)
		}
	}
	return runs
}

// selectRun picks the current (last) run, or the one before it for previous.
func selectRun(runs []logRun, previous bool) (logRun, error) {
	i := len(runs) - 1
	if previous {
		i--
	}
	if i < 0 {
		if previous {
			return logRun{}, errNoPrevious
		}
		return logRun{}, nil
	}
	return runs[i], nil
}

// tail keeps the last n lines (all if n < 0).
func tailLines(lines [][]byte, n int) [][]byte {
	if n < 0 || n >= len(lines) {
		return lines
	}
	return lines[len(lines)-n:]
}

// limitWriter stops after n bytes (0: no limit) and reports io.EOF then, which ends a followed log.
type limitWriter struct {
	w io.Writer
	n int64
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if l.n <= 0 {
		return l.w.Write(p)
	}
	if int64(len(p)) >= l.n {
		p = p[:l.n]
		n, err := l.w.Write(p)
		l.n = -1
		if err == nil {
			err = io.EOF
		}
		return n, err
	}
	n, err := l.w.Write(p)
	l.n -= int64(n)
	return n, err
}

func serveContainerLogs(w http.ResponseWriter, r *http.Request, rt podRuntime) {
	opts, err := parseLogOptions(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	path, _, alive, err := rt.ContainerLog(r.PathValue("ns"), r.PathValue("pod"), r.PathValue("container"))
	if err != nil {
		writeError(w, err)
		return
	}
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		f, err = nil, nil // not started yet: an empty log
	}
	if err != nil {
		writeError(w, err)
		return
	}
	var data []byte
	if f != nil {
		defer f.Close()
		if data, err = io.ReadAll(f); err != nil {
			writeError(w, err)
			return
		}
	}
	run, err := selectRun(splitRuns(data), opts.Previous)
	if err != nil {
		writeError(w, fmt.Errorf("%w: container %q in pod %q", err, r.PathValue("container"), r.PathValue("pod")))
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	out := io.Writer(w)
	if opts.LimitBytes > 0 {
		out = &limitWriter{w: w, n: opts.LimitBytes}
	}
	for _, line := range tailLines(run.Lines, opts.TailLines) {
		if _, err := out.Write(line); err != nil {
			return
		}
	}
	if !opts.Follow || run.Ended || f == nil {
		return
	}
	if fl, ok := w.(http.Flusher); ok {
		fl.Flush()
	}
	_ = followLog(r.Context(), f, out, alive, 250*time.Millisecond)
}

// followLog copies lines appended to f (read up to its end already) until the run ends (its exited marker,
// or the next run's start), the pod is gone, or ctx ends.
func followLog(ctx context.Context, f *os.File, out io.Writer, alive func() bool, poll time.Duration) error {
	rd := bufio.NewReader(f)
	var partial []byte
	stopping := false
	for {
		line, err := rd.ReadBytes('\n')
		if len(line) > 0 && err == nil {
			line = append(partial, line...)
			partial = nil
			start, end := markerKind(line)
			if start || end {
				return nil
			}
			if _, werr := out.Write(line); werr != nil {
				return werr
			}
			if fl, ok := out.(http.Flusher); ok {
				fl.Flush()
			} else if lw, ok := out.(*limitWriter); ok {
				if fl, ok := lw.w.(http.Flusher); ok {
					fl.Flush()
				}
			}
			continue
		}
		partial = append(partial, line...)
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("reading container log: %w", err)
		}
		if stopping {
			return nil
		}
		if alive != nil && !alive() {
			stopping = true // read what the last writes left once more, then end
			continue
		}
		if !sleepCtx(ctx, poll) {
			return ctx.Err()
		}
	}
}
