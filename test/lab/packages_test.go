package lab

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestInstallScriptListsEveryLabPackage keeps hack/install-packages.sh (what `make demo`, `make test` and
// .ci/run install up front) and hostTools (what the lab checks for, and would install half-way through a
// run) the same list: the script once missed conntrack.
func TestInstallScriptListsEveryLabPackage(t *testing.T) {
	script, err := os.ReadFile(filepath.Join("..", "..", "hack", "install-packages.sh"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^pkgs=\(([^)]*)\)`).FindSubmatch(script)
	if m == nil {
		t.Fatal("no pkgs=(...) line in hack/install-packages.sh")
	}
	got := strings.Fields(string(m[1]))
	want := make([]string, 0, len(hostTools))
	for _, h := range hostTools {
		want = append(want, h.pkg)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("hack/install-packages.sh installs %v, the lab needs %v", got, want)
	}
}
