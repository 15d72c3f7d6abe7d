package kubelet

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestParseImageMapping(t *testing.T) {
	cases := []struct {
		in      string
		want    ImageMapping
		wantErr bool
	}{
		{"ipvs-operator/=/mnt/host/bin", ImageMapping{Match: "ipvs-operator/", Dir: "/mnt/host/bin"}, false},
		{"e2e-test-images/agnhost=/mnt/host/bin:/agnhost:pause",
			ImageMapping{Match: "e2e-test-images/agnhost", Dir: "/mnt/host/bin", Entrypoint: "/agnhost", Cmd: []string{"pause"}}, false},
		{"k8s.io/pause=/mnt/host/bin:/pause", ImageMapping{Match: "k8s.io/pause", Dir: "/mnt/host/bin", Entrypoint: "/pause"}, false},
		{"nodir=", ImageMapping{}, true},
		{"=/mnt", ImageMapping{}, true},
		{"plain", ImageMapping{}, true},
	}
	for _, c := range cases {
		got, err := ParseImageMapping(c.in)
		if (err != nil) != c.wantErr || (!c.wantErr && !reflect.DeepEqual(got, c.want)) {
			t.Errorf("ParseImageMapping(%q) = %+v, %v", c.in, got, err)
		}
	}
}

// The container runtime's rules: command replaces ENTRYPOINT and drops CMD; args replace CMD.
func TestCommandLine(t *testing.T) {
	agnhost := ImageMapping{Dir: "/bin", Entrypoint: "/agnhost", Cmd: []string{"pause"}}
	cases := []struct {
		name              string
		m                 ImageMapping
		c                 corev1.Container
		wantCmd, wantArgs []string
	}{
		{"args only", agnhost, corev1.Container{Args: []string{"netexec", "--http-port=80"}}, []string{"/agnhost"}, []string{"netexec", "--http-port=80"}},
		{"nothing: image CMD", agnhost, corev1.Container{}, []string{"/agnhost"}, []string{"pause"}},
		{"command drops CMD", agnhost, corev1.Container{Command: []string{"/agnhost", "serve-hostname"}}, []string{"/agnhost", "serve-hostname"}, nil},
		{"no entrypoint", ImageMapping{Dir: "/bin"}, corev1.Container{Args: []string{"x"}}, nil, []string{"x"}},
	}
	for _, c := range cases {
		cmd, args := c.m.commandLine(&c.c)
		if !reflect.DeepEqual(cmd, c.wantCmd) || !reflect.DeepEqual(args, c.wantArgs) {
			t.Errorf("%s: commandLine = %q %q, want %q %q", c.name, cmd, args, c.wantCmd, c.wantArgs)
		}
	}
	argv, err := mappedArgv(agnhost, &corev1.Container{Args: []string{"netexec", "--http-port=$(PORT)"}}, map[string]string{"PORT": "8080"})
	if want := []string{"/agnhost", "netexec", "--http-port=8080"}; err != nil || !reflect.DeepEqual(argv, want) {
		t.Errorf("mappedArgv = %q, %v; want %q", argv, err, want)
	}
	// The image's own tools run from the VM's root, as upstream's specs name them.
	argv, err = mappedArgv(agnhost, &corev1.Container{Command: []string{"/bin/sh", "-c", "sleep 10"}}, nil)
	if want := []string{"/bin/sh", "-c", "sleep 10"}; err != nil || !reflect.DeepEqual(argv, want) {
		t.Errorf("mappedArgv = %q, %v; want %q", argv, err, want)
	}
}

func TestLinkEntrypoints(t *testing.T) {
	dir := t.TempDir()
	entry := filepath.Join(dir, "agnhost")
	m := []ImageMapping{{Dir: "/mnt/host/bin", Entrypoint: entry}, {Dir: "/x", Entrypoint: "relative"}}
	for range 2 { // the second call finds the link there
		if err := linkEntrypoints(m); err != nil {
			t.Fatal(err)
		}
	}
	if target, err := os.Readlink(entry); err != nil || target != "/mnt/host/bin/agnhost" {
		t.Errorf("link = %q, %v", target, err)
	}
}

func TestPodHostname(t *testing.T) {
	pod := &corev1.Pod{}
	pod.Name = "echo-abc"
	if got := podHostname(pod); got != "echo-abc" {
		t.Errorf("podHostname = %q", got)
	}
	pod.Spec.Hostname = "web-0"
	if got := podHostname(pod); got != "web-0" {
		t.Errorf("podHostname with spec.hostname = %q", got)
	}
	pod.Spec.Hostname = ""
	pod.Name = strings.Repeat("a", 62) + "-b"
	if got := podHostname(pod); got != strings.Repeat("a", 62) {
		t.Errorf("podHostname of a long name = %q", got)
	}
}
