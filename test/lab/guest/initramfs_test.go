package guest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestCpioListsWhatWasAdded(t *testing.T) {
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Skip("no cpio")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	if err := os.WriteFile(src, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := newInitramfsSpec()
	s.file("usr/sbin/tool", src, 0o755)
	s.inline("init", []byte("#!/bin/sh\n"), 0o755)
	s.symlink("bin/sh", "busybox")
	s.add(&cpioEntry{name: "dev/console", mode: sIFCHR | 0o600, rmajor: 5, rminor: 1})
	var buf bytes.Buffer
	if err := s.writeCpio(&buf); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	if err := os.Mkdir(out, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("cpio", "-idm", "--quiet", "--no-absolute-filenames")
	cmd.Dir = out
	cmd.Stdin = bytes.NewReader(buf.Bytes())
	if msg, err := cmd.CombinedOutput(); err != nil && !strings.Contains(string(msg), "console") {
		// Creating the device node needs privileges; everything else must unpack.
		t.Fatalf("cpio: %v: %s", err, msg)
	}
	if data, err := os.ReadFile(filepath.Join(out, "usr/sbin/tool")); err != nil || string(data) != "hello" {
		t.Fatalf("tool: %q %v", data, err)
	}
	if st, err := os.Stat(filepath.Join(out, "init")); err != nil || st.Mode().Perm() != 0o755 {
		t.Fatalf("init: %v %v", st, err)
	}
	if target, err := os.Readlink(filepath.Join(out, "bin/sh")); err != nil || target != "busybox" {
		t.Fatalf("bin/sh: %q %v", target, err)
	}

	// Equal inputs, equal manifest; a changed input, another one.
	m1, _ := s.manifest()
	m2, _ := s.manifest()
	s.inline("init", []byte("#!/bin/sh\necho changed\n"), 0o755)
	m3, _ := s.manifest()
	if m1 != m2 || m1 == m3 {
		t.Fatalf("manifest: %s %s %s", m1, m2, m3)
	}
}

func TestCopyModuleStripsTheSignature(t *testing.T) {
	dir := t.TempDir()
	body := []byte("\x7fELF module body")
	sig := bytes.Repeat([]byte{0xAA}, 300)
	info := []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x2c} // sig_len 300, big endian
	signed := append(append(append(append([]byte{}, body...), sig...), info...), moduleSigMagic...)
	for name, in := range map[string][]byte{"signed.ko": signed, "plain.ko": body} {
		src := filepath.Join(dir, name)
		if err := os.WriteFile(src, in, 0o644); err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(dir, "out", name)
		if err := copyModule(src, dst); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(dst)
		if !bytes.Equal(got, body) {
			t.Fatalf("%s: got %q", name, got)
		}
	}
}
