package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// stage is one FROM ... AS name block of a Dockerfile: its base and its instructions, with continuation
// lines joined.
type stage struct {
	name, base string
	lines      []string
}

func parseDockerfile(t *testing.T, path string) []stage {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var stages []stage
	var cur strings.Builder
	from := regexp.MustCompile(`(?i)^FROM\s+(\S+)(?:\s+AS\s+(\S+))?$`)
	for _, raw := range strings.Split(string(b), "\n") {
		line := strings.TrimSpace(raw)
		if cur.Len() == 0 && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if strings.HasSuffix(line, "\\") {
			cur.WriteString(strings.TrimSuffix(line, "\\") + " ")
			continue
		}
		cur.WriteString(line)
		instr := strings.Join(strings.Fields(cur.String()), " ")
		cur.Reset()
		if m := from.FindStringSubmatch(instr); m != nil {
			stages = append(stages, stage{name: m[2], base: m[1]})
			continue
		}
		if len(stages) == 0 {
			t.Fatalf("%s: instruction before FROM: %s", path, instr)
		}
		stages[len(stages)-1].lines = append(stages[len(stages)-1].lines, instr)
	}
	return stages
}

// TestDockerfileTargets keeps the Dockerfile, the Makefile and the kind suite consistent without a Docker
// engine: the default target (the last stage) is the product and carries /agent and /operator and nothing
// built from test code; the lab target carries /labvm; the targets the suite and the Makefile build exist.
func TestDockerfileTargets(t *testing.T) {
	root := filepath.Join("..", "..")
	stages := parseDockerfile(t, filepath.Join(root, "Dockerfile"))
	byName := map[string]stage{}
	for _, s := range stages {
		byName[s.name] = s
	}
	if last := stages[len(stages)-1].name; last != productTarget {
		t.Errorf("the last stage, what `docker build` without --target makes, is %q, want the product (%q)", last, productTarget)
	}
	// chain is the stage with every stage it builds on or copies from: what building it runs.
	var chain func(name string, seen map[string]bool) []string
	chain = func(name string, seen map[string]bool) []string {
		s, ok := byName[name]
		if !ok || seen[name] {
			return nil
		}
		seen[name] = true
		out := slices.Clone(s.lines)
		out = append(out, chain(s.base, seen)...)
		for _, l := range s.lines {
			if m := regexp.MustCompile(`--from=(\S+)`).FindStringSubmatch(l); m != nil {
				out = append(out, chain(m[1], seen)...)
			}
		}
		return out
	}
	product := strings.Join(chain(productTarget, map[string]bool{}), "\n")
	if strings.Contains(product, "labvm") || strings.Contains(product, "test/lab") {
		t.Errorf("building the product image builds or copies test code:\n%s", product)
	}
	copyOf := func(name string) string {
		for _, l := range byName[name].lines {
			if strings.HasPrefix(l, "COPY --from=") {
				return l
			}
		}
		return ""
	}
	if c := copyOf(productTarget); !strings.Contains(c, "/out/agent") || !strings.Contains(c, "/out/operator") {
		t.Errorf("the product stage copies %q, want /agent and /operator", c)
	}
	if _, ok := byName[labTarget]; !ok {
		t.Fatalf("no %q stage: the kind suite builds its test image from it", labTarget)
	}
	if c := copyOf(labTarget); !strings.Contains(c, "/out"+labvmPath) {
		t.Errorf("the lab stage copies %q, want %s", c, labvmPath)
	}
	if !strings.Contains(strings.Join(chain(labTarget, map[string]bool{}), "\n"), "./test/lab/cmd/labvm") {
		t.Errorf("the lab target does not build ./test/lab/cmd/labvm")
	}
	// The kind suite's helper containers run the test image and need these, since nothing is installed
	// into the nodes (test/e2e/cluster.go, nodeExecContainer).
	for _, pkg := range []string{"ipvsadm", "iputils-arping", "iproute2"} {
		if !slices.ContainsFunc(byName[labTarget].lines, func(l string) bool {
			return strings.HasPrefix(l, "RUN ") && strings.Contains(l, "apt-get install") && strings.Contains(l, " "+pkg)
		}) {
			t.Errorf("the lab target does not install %s", pkg)
		}
	}

	mk, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"build --target " + productTarget + " -t $(IMG)", "build --target " + labTarget + " -t $(LAB_IMG)",
		"--target " + productTarget + " --tag $(IMG)", "E2E_LAB_IMG=$(LAB_IMG)"} {
		if !strings.Contains(string(mk), want) {
			t.Errorf("the Makefile lacks %q", want)
		}
	}
}

func TestLabImageFor(t *testing.T) {
	for in, want := range map[string]string{
		"ghcr.io/ipvs-operator/ipvs-operator:v0.1.0": "ghcr.io/ipvs-operator/ipvs-operator-lab:v0.1.0",
		"localhost:5000/op:dev":                      "localhost:5000/op-lab:dev",
		"op@sha256:abc":                              "op-lab@sha256:abc",
		"op":                                         "op-lab",
	} {
		if got := labImageFor(in); got != want {
			t.Errorf("labImageFor(%q) = %q, want %q", in, got, want)
		}
	}
}
