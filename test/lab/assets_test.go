package lab

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
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

func TestPKIAndKubeconfig(t *testing.T) {
	dir := t.TempDir()
	p, err := generatePKI(filepath.Join(dir, "pki"))
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(p.serverCert)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	ips := make([]string, 0, len(cert.IPAddresses))
	for _, ip := range cert.IPAddresses {
		ips = append(ips, ip.String())
	}
	for _, want := range []string{"127.0.0.1", GuestAPIServerHost, "10.96.0.1"} {
		if !strings.Contains(strings.Join(ips, " "), want) {
			t.Errorf("serving certificate lacks IP SAN %s: %v", want, ips)
		}
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(p.caPEM)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: "kubernetes.default.svc"}); err != nil {
		t.Errorf("serving certificate does not verify: %v", err)
	}
	kc := filepath.Join(dir, "kubeconfig")
	if err := p.writeKubeconfig(kc, "https://10.0.2.100:6443"); err != nil {
		t.Fatal(err)
	}
	cfg, err := loadConfig(kc)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Host != "https://10.0.2.100:6443" || len(cfg.CertData) == 0 || len(cfg.KeyData) == 0 || len(cfg.CAData) == 0 {
		t.Fatalf("kubeconfig: %+v", cfg)
	}
}

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

func TestVMArgvForwardsTheAPIServerAndLabd(t *testing.T) {
	argv := vmConfig{qemu: "qemu", vmlinux: "k", initramfs: "i", share: "/s", memoryMiB: 3072, cpus: 2,
		apiPort: 40000, labdPort: 40001}.argv()
	joined := strings.Join(argv, " ")
	for _, want := range []string{
		"restrict=on",
		"guestfwd=tcp:10.0.2.100:6443-cmd:socat - TCP:127.0.0.1:40000",
		"guestfwd=tcp:10.0.2.100:40000-cmd:socat - TCP:127.0.0.1:40000",
		"hostfwd=tcp:127.0.0.1:40001-10.0.2.15:7000",
		"-accel tcg,thread=multi", "-cpu qemu64", "-smp 2", "-m 3072", "-no-reboot",
		"local,path=/s,mount_tag=host0",
	} {
		if !strings.Contains(joined, want) {
			t.Errorf("qemu argv lacks %q:\n%s", want, joined)
		}
	}
}
