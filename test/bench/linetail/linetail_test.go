package linetail_test

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/ipvs-operator/ipvs-operator/test/bench/linetail"
)

func TestLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cmd")
	tail := &linetail.Tail{Path: path}
	if lines, err := tail.Lines(); len(lines) != 0 || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("before the file: %v, %v", lines, err)
	}
	appendTo := func(s string) {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteString(s); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	for _, step := range []struct {
		write string
		want  [][]string
	}{
		{"a 1 x=2\nb 2", [][]string{{"a", "1", "x=2"}}},
		{"\n\n  \nc", [][]string{{"b", "2"}}},
		{"", nil},
		{" 3\n", [][]string{{"c", "3"}}},
	} {
		appendTo(step.write)
		lines, err := tail.Lines()
		if err != nil || !reflect.DeepEqual(lines, step.want) {
			t.Errorf("after %q: %v, %v; want %v", step.write, lines, err, step.want)
		}
	}
}
