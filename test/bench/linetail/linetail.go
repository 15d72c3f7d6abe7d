// Package linetail reads a file another process appends lines to: the harness and `benchvm watch` talk
// through two such files (commands one way, answers the other), one line per message.
package linetail

import (
	"io"
	"os"
	"strings"
)

// Tail follows the file at Path from its start.
type Tail struct {
	Path    string
	offset  int64
	partial string // the end of the last read, until its newline arrives
}

// Lines returns the whole lines appended since the last call, each split into fields; blank lines are
// skipped. A file that does not exist yet holds no lines; the error is returned with them.
func (t *Tail) Lines() ([][]string, error) {
	f, err := os.Open(t.Path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if _, err := f.Seek(t.offset, io.SeekStart); err != nil {
		return nil, err
	}
	data, err := io.ReadAll(f)
	t.offset += int64(len(data))
	t.partial += string(data)
	var lines [][]string
	for {
		line, rest, ok := strings.Cut(t.partial, "\n")
		if !ok {
			break
		}
		t.partial = rest
		if f := strings.Fields(line); len(f) > 0 {
			lines = append(lines, f)
		}
	}
	return lines, err
}
