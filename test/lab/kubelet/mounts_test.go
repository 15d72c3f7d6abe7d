package kubelet

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
)

func TestParseBindMount(t *testing.T) {
	cases := map[string]*bindMount{
		"/proc/sys/net:/host/proc/sys/net": {Source: "/proc/sys/net", Target: "/host/proc/sys/net"},
		"/lib/modules:/lib/modules:ro":     {Source: "/lib/modules", Target: "/lib/modules", ReadOnly: true},
		"/a:relative":                      nil,
		"/a:/b:rw":                         nil,
		"/a":                               nil,
		":/b":                              nil,
	}
	for in, want := range cases {
		got, err := parseBindMount(in)
		if want == nil {
			if err == nil {
				t.Errorf("parseBindMount(%q) accepted", in)
			}
			continue
		}
		if err != nil || got != *want || got.String() != in {
			t.Errorf("parseBindMount(%q) = %+v, %v", in, got, err)
		}
	}
}

func TestContainerMounts(t *testing.T) {
	dirType := corev1.HostPathDirectory
	pod := &corev1.Pod{Spec: corev1.PodSpec{Volumes: []corev1.Volume{
		{Name: "lib-modules", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/lib/modules"}}},
		{Name: "sys-net", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/proc/sys/net", Type: &dirType}}},
		{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		{Name: "kube-api-access-abcde", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token"}}}}}},
		{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{}}},
	}}}
	c := &corev1.Container{VolumeMounts: []corev1.VolumeMount{
		{Name: "lib-modules", MountPath: "/lib/modules", ReadOnly: true},
		{Name: "sys-net", MountPath: "/host/proc/sys/net"},
		{Name: "scratch", MountPath: "/tmp/work"},
		{Name: "kube-api-access-abcde", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount", ReadOnly: true},
		{Name: "cfg", MountPath: "/etc/cfg"},
		{Name: "sys-net", MountPath: "/x", SubPath: "ipv4"},
	}}
	files := serviceAccountFilesIn("/run/pods/p")
	binds, skipped := containerMounts(pod, c, "/run/pods/p", &files)
	want := []bindMount{
		{Source: "/lib/modules", Target: "/lib/modules", ReadOnly: true},
		{Source: "/proc/sys/net", Target: "/host/proc/sys/net"},
		{Source: "/run/pods/p/volumes/scratch", Target: "/tmp/work"},
		{Source: "/run/pods/p/serviceaccount", Target: "/var/run/secrets/kubernetes.io/serviceaccount", ReadOnly: true},
		{Source: "/run/pods/p/volumes/cfg", Target: "/etc/cfg", ReadOnly: true}, // ConfigMap volumes are read-only, as the kubelet's
	}
	if !reflect.DeepEqual(binds, want) {
		t.Errorf("binds =\n%+v\nwant\n%+v", binds, want)
	}
	if !reflect.DeepEqual(skipped, []string{"sys-net (subPath)"}) {
		t.Errorf("skipped = %q", skipped)
	}
	// Without a token (automount off) the token volume is not bound.
	binds, _ = containerMounts(pod, c, "/run/pods/p", nil)
	if len(binds) != 4 {
		t.Errorf("binds without token = %+v", binds)
	}
	argv := containerArgv("/bin/labvm", want[:1], nil, []string{"/bin/agent", "--x"})
	if strings.Join(argv, " ") != "/bin/labvm container --bind /lib/modules:/lib/modules:ro -- /bin/agent --x" {
		t.Errorf("containerArgv = %q", argv)
	}
	if got := containerArgv("/bin/labvm", nil, nil, []string{"/bin/agent"}); !reflect.DeepEqual(got, []string{"/bin/agent"}) {
		t.Errorf("containerArgv without binds = %q", got)
	}
	sec := containerSecurity{Capabilities: []string{"NET_ADMIN"}, NoNewPrivs: true, ReadOnlyRoot: true}
	argv = containerArgv("/bin/labvm", nil, &sec, []string{"/bin/agent"})
	if strings.Join(argv, " ") != "/bin/labvm container --caps=NET_ADMIN --no-new-privs --read-only-root -- /bin/agent" {
		t.Errorf("containerArgv with a securityContext = %q", argv)
	}
	if got := containerArgv("/bin/labvm", nil, &containerSecurity{Privileged: true}, []string{"/bin/agent"}); !reflect.DeepEqual(got, []string{"/bin/agent"}) {
		t.Errorf("containerArgv privileged = %q", got)
	}
}

// TestExecInMountNamespace runs `labvm container` (this test binary plays labvm): the process sees the
// bind, read-only, and the bind never shows in the test's own mount namespace.
func TestExecInMountNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for mount namespaces")
	}
	src, dst := t.TempDir(), filepath.Join(t.TempDir(), "host", "thing")
	if err := os.WriteFile(filepath.Join(src, "file"), []byte("from-the-node"), 0o644); err != nil {
		t.Fatal(err)
	}
	self, _ := os.Executable()
	out, err := exec.Command(self, ContainerCommand, "--bind", src+":"+dst+":ro", "--",
		"/bin/sh", "-c", "cat "+dst+"/file; echo; if touch "+dst+"/new 2>/dev/null; then echo writable; else echo read-only; fi").CombinedOutput()
	if err != nil {
		t.Fatalf("labvm container: %v: %s", err, out)
	}
	if string(out) != "from-the-node\nread-only\n" {
		t.Errorf("inside the mount namespace: %q", out)
	}
	if entries, _ := os.ReadDir(dst); len(entries) != 0 {
		t.Errorf("the bind leaked into the parent's mount namespace: %v", entries)
	}
	out, err = exec.Command(self, ContainerCommand, "--bind", "nonsense", "--", "true").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "bind") {
		t.Errorf("bad bind accepted: %v %s", err, out)
	}
}

func TestSecurityFor(t *testing.T) {
	tests := []struct {
		name string
		sc   *corev1.SecurityContext
		want containerSecurity
	}{
		{"none: the runtime's defaults", nil, containerSecurity{Capabilities: []string{"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE",
			"FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE", "NET_RAW", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}}},
		{"the agent: drop ALL, add NET_ADMIN", &corev1.SecurityContext{
			AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true),
			Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN"}, Drop: []corev1.Capability{"ALL"}},
		}, containerSecurity{Capabilities: []string{"NET_ADMIN"}, NoNewPrivs: true, ReadOnlyRoot: true}},
		{"drop one, add one with its CAP_ prefix", &corev1.SecurityContext{
			Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"CAP_SYS_MODULE"}, Drop: []corev1.Capability{"NET_RAW", "MKNOD", "SETPCAP",
				"SETFCAP", "KILL", "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "SETGID", "SETUID", "SYS_CHROOT"}},
		}, containerSecurity{Capabilities: []string{"NET_BIND_SERVICE", "SYS_MODULE"}}},
		{"privileged", &corev1.SecurityContext{Privileged: ptr.To(true)}, containerSecurity{Privileged: true}},
	}
	for _, tt := range tests {
		if got := securityFor(tt.sc); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: securityFor = %+v, want %+v", tt.name, got, tt.want)
		}
	}
}

// TestExecWithCapabilities runs `labvm container --caps=...` (this test binary plays labvm): the process
// keeps exactly the granted capabilities, in every set, and runs with no_new_privs.
func TestExecWithCapabilities(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to hold capabilities to drop")
	}
	self, _ := os.Executable()
	out, err := exec.Command(self, ContainerCommand, "--caps=NET_ADMIN", "--no-new-privs", "--",
		"/bin/sh", "-c", "grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs):' /proc/self/status").CombinedOutput()
	if err != nil {
		t.Fatalf("labvm container: %v: %s", err, out)
	}
	want := "CapInh:\t0000000000001000\nCapPrm:\t0000000000001000\nCapEff:\t0000000000001000\nCapBnd:\t0000000000001000\nCapAmb:\t0000000000000000\nNoNewPrivs:\t1\n"
	if string(out) != want {
		t.Errorf("the container's process has\n%s\nwant\n%s", out, want)
	}
	out, err = exec.Command(self, ContainerCommand, "--caps=", "--", "/bin/sh", "-c", "grep ^CapEff: /proc/self/status").CombinedOutput()
	if err != nil || string(out) != "CapEff:\t0000000000000000\n" {
		t.Errorf("--caps= (none): %v %q", err, out)
	}
}

// A FileOrCreate hostPath that does not exist becomes an empty file, not the directory `labvm container`
// makes of a missing source; an existing one is left as it is, and other types are not created.
func TestCreateHostPathFiles(t *testing.T) {
	dir := t.TempDir()
	lock := filepath.Join(dir, "run", "xtables.lock")
	kept := filepath.Join(dir, "kept")
	if err := os.WriteFile(kept, []byte("held"), 0o600); err != nil {
		t.Fatal(err)
	}
	untyped := filepath.Join(dir, "untyped")
	pod := &corev1.Pod{Spec: corev1.PodSpec{Volumes: []corev1.Volume{
		{Name: "xtables-lock", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: lock, Type: ptr.To(corev1.HostPathFileOrCreate)}}},
		{Name: "kept", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: kept, Type: ptr.To(corev1.HostPathFileOrCreate)}}},
		{Name: "untyped", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: untyped}}},
	}}}
	if err := createHostPathFiles(pod); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(lock); err != nil || !st.Mode().IsRegular() || st.Size() != 0 {
		t.Errorf("%s after createHostPathFiles: %v, %v; want an empty file", lock, st, err)
	}
	if b, err := os.ReadFile(kept); err != nil || string(b) != "held" {
		t.Errorf("existing file now %q, %v; want it untouched", b, err)
	}
	if _, err := os.Stat(untyped); !os.IsNotExist(err) {
		t.Errorf("untyped hostPath %s created (%v); only FileOrCreate is", untyped, err)
	}
}
