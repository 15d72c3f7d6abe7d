package guest

import (
	"bytes"
	"slices"
	"testing"

	"github.com/ipvs-operator/ipvs-operator/test/lab/host"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

func TestKernelChoices(t *testing.T) {
	tests := []struct {
		name       string
		wantErr    bool
		bootIPVS   bool
		sameInputs bool // the cache key of a kernel prepared before there was a choice
	}{
		{name: "", bootIPVS: true, sameInputs: true},
		{name: "6.1", bootIPVS: true, sameInputs: true},
		{name: "6.12"},
		{name: "5.10", wantErr: true},
	}
	for _, tt := range tests {
		c, err := chooseKernel(tt.name)
		if (err != nil) != tt.wantErr {
			t.Fatalf("chooseKernel(%q) error %v", tt.name, err)
		}
		if err != nil {
			continue
		}
		boot := c.bootModules()
		if slices.Contains(boot, "ip_vs") != tt.bootIPVS || slices.Contains(boot, "dummy") != tt.bootIPVS ||
			slices.Contains(boot, "xt_ipvs") != tt.bootIPVS {
			t.Errorf("%q: boot modules %v, want ip_vs, dummy and xt_ipvs (which needs ip_vs) at boot: %v", tt.name, boot, tt.bootIPVS)
		}
		if !slices.Contains(boot, "9p") || !slices.Contains(boot, "br_netfilter") {
			t.Errorf("%q: the guest's own modules are missing from %v", tt.name, boot)
		}
		if (c.inputs() == kernelInputs()) != tt.sameInputs {
			t.Errorf("%q: inputs %q", tt.name, c.inputs())
		}
		if c.dir == "" || c.initramfsDir == "" {
			t.Errorf("%q: no cache directories", tt.name)
		}
	}
	a, _ := chooseKernel("6.1")
	b, _ := chooseKernel("6.12")
	if a.dir == b.dir || a.initramfsDir == b.initramfsDir {
		t.Errorf("two kernels share a cache directory: %+v %+v", a, b)
	}
}

// TestZstdPayload: a bzImage's zstd payload is followed by its size, which must end the payload, not fail it.
func TestZstdPayload(t *testing.T) {
	elf := append([]byte("\x7fELF"), bytes.Repeat([]byte("vmlinux"), 1000)...)
	var z bytes.Buffer
	w, err := zstd.NewWriter(&z)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = w.Write(elf)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	z.Write([]byte{0x10, 0x20, 0x30, 0x40}) // the appended size
	var out bytes.Buffer
	if err := zstdPayload(z.Bytes(), &out); err != nil || !bytes.Equal(out.Bytes(), elf) {
		t.Errorf("zstdPayload = %d bytes, %v", out.Len(), err)
	}
}

func TestDecompressModule(t *testing.T) {
	dir := t.TempDir()
	mod := append([]byte("\x7fELF"), bytes.Repeat([]byte("module"), 100)...)
	var x bytes.Buffer
	w, err := xz.NewWriter(&x)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = w.Write(mod)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"m.ko": mod, "m.ko.xz": x.Bytes()} {
		p := dir + "/" + name
		if err := host.WriteFileAtomic(p, data); err != nil {
			t.Fatal(err)
		}
		got, err := decompressModule(p)
		if err != nil || !bytes.Equal(got, mod) {
			t.Errorf("%s: %d bytes, %v", name, len(got), err)
		}
	}
}
