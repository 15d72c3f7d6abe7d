package guest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// podPath is the PATH the lab kubelet gives containers (and Alpine, agnhost's base, gives its shell).
const podPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// unpackUserland writes the guest's programs as an initramfs and unpacks it into a directory, to run them
// there with chroot as the VM would.
func unpackUserland(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("chroot needs root")
	}
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Skip("no cpio")
	}
	s := newInitramfsSpec()
	if err := s.userland(context.Background()); err != nil {
		t.Skipf("the host lacks the lab's guest programs: %v", err)
	}
	var buf bytes.Buffer
	if err := s.writeCpio(&buf); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	cmd := exec.Command("cpio", "-idm", "--quiet", "--no-absolute-filenames")
	cmd.Dir = root
	cmd.Stdin = &buf
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio: %v: %s", err, msg)
	}
	// busybox sh runs an applet by re-executing /proc/self/exe: without /proc it falls back to PATH, which
	// would hide the very difference these tests are about.
	proc := filepath.Join(root, "proc")
	if err := os.MkdirAll(proc, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("proc", proc, "proc", 0, ""); err != nil {
		t.Skipf("mount proc: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(proc, syscall.MNT_DETACH) })
	return root
}

// inGuest runs argv in the unpacked guest root, with the pods' PATH, and returns its combined output.
func inGuest(t *testing.T, root string, argv ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = []string{"PATH=" + podPath, "HOME=/root"}
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// hostNameServer answers each TCP connection with "pod-1", as agnhost's serve-hostname and netexec do.
func hostNameServer(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.WriteString(c, "pod-1\n")
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestPodShellRunsTheProgramsOnPath runs, in the guest's userland, the probes upstream's Service e2e specs
// send through `/bin/sh -c` in agnhost pods: they must reach netcat-openbsd and a wget that knows -T, as in
// agnhost's image. Debian's busybox sh would run its own nc (no -v/-t) and wget (crashes on -T) instead.
func TestPodShellRunsTheProgramsOnPath(t *testing.T) {
	root := unpackUserland(t)
	tcpPort := hostNameServer(t)
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "pod-2")
	}))
	defer web.Close()

	for _, tc := range []struct {
		name, script, want string
	}{
		// test/e2e/network/util.go and framework/service/jig.go: checkServiceReachability
		{"nc -v -t", fmt.Sprintf("echo hostName | nc -v -t -w 2 127.0.0.1 %d", tcpPort), "pod-1"},
		{"nc -v -t reports the connection", fmt.Sprintf("echo hostName | nc -v -t -w 2 127.0.0.1 %d 2>&1", tcpPort), "succeeded"},
		// test/e2e/network/service.go: verifyServeHostnameServiceUp, and the terminating endpoints specs
		{"wget -T 1", "wget -q -O - -T 1 " + web.URL, "pod-2"},
		{"wget -T 5 -qO-", "wget -T 5 -qO- " + web.URL, "pod-2"},
		{"curl", "curl -s " + web.URL, "pod-2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := inGuest(t, root, "/bin/sh", "-c", tc.script)
			if err != nil || !strings.Contains(out, tc.want) {
				t.Fatalf("/bin/sh -c %q: %v\n%s", tc.script, err, out)
			}
		})
	}
}

// TestBusyboxImageRunsBusybox: upstream's busybox image has nothing but busybox, so its sh's nc is
// busybox's, whatever PATH says.
func TestBusyboxImageRunsBusybox(t *testing.T) {
	root := unpackUserland(t)
	out, err := inGuest(t, root, filepath.Join(BusyboxImageDir, "sh"), "-c", "nc -v 2>&1; true")
	if err != nil || !strings.Contains(out, "BusyBox") {
		t.Fatalf("busybox image's sh -c 'nc -v': %v\n%s", err, out)
	}
	for _, applet := range []string{"sh", "sleep", "nc"} {
		if target, err := os.Readlink(filepath.Join(root, BusyboxImageDir, applet)); err != nil || target != "/bin/busybox" {
			t.Fatalf("%s: %q %v", applet, target, err)
		}
	}
}
