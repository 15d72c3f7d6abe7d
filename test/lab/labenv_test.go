package lab

import (
	"os/exec"
	"testing"
)

func TestLabEnvIsShellQuoted(t *testing.T) {
	dir := t.TempDir()
	l := &Lab{opts: Options{LabvmPackage: "./test/lab/cmd/labvm", ImageMap: "it's=/mnt/host/bin",
		KubeletArgs: []string{"--v=2"}}, shareDir: dir}
	if err := l.writeLabEnv(); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", "-c", `. ./lab.env && printf '%s|%s|%s|%s' "$LAB_IMAGE_MAP" "$LAB_LABVM" "$LAB_KUBELET_ARGS" "$LAB_LABD_ADDR"`)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if want := "it's=/mnt/host/bin|/mnt/host/bin/labvm|--cluster-dns=10.96.0.10 --cluster-domain=cluster.local --v=2|10.0.2.15:7000"; string(out) != want {
		t.Fatalf("got %q, want %q", out, want)
	}
}
