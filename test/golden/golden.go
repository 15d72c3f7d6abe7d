// Package golden compares a test's output with a file under testdata/ (a golden file), and rewrites the
// file from the output when the test runs with -update. It is the one copy of that logic for every
// package's golden tests (`ipvsadm -Sn` renderings, nftables rules, the rendered DaemonSet).
package golden

import (
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/ from the current output")

// Check compares got with the golden file at path and returns the file's content. With -update it first
// writes got to path (creating its directory), so the comparison then passes and the diff shows in git.
func Check(t testing.TB, path string, got []byte) []byte {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run the test with -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("output differs from %s (-want +got; run the test with -update if the change is intended):\n%s", path, diff)
	}
	return want
}
