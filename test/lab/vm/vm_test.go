package vm

import (
	"strings"
	"testing"
)

func TestVMArgvForwardsTheAPIServerAndLabd(t *testing.T) {
	argv := Config{Qemu: "qemu", Vmlinux: "k", Initramfs: "i", Share: "/s", MemoryMiB: 3072, CPUs: 2,
		APIPort: 40000, LabdPort: 40001, KubeletPorts: []int{40002, 40003}}.argv()
	joined := strings.Join(argv, " ")
	for _, want := range []string{
		"restrict=on",
		"guestfwd=tcp:10.0.2.100:6443-cmd:socat - TCP:127.0.0.1:40000",
		"guestfwd=tcp:10.0.2.100:40000-cmd:socat - TCP:127.0.0.1:40000",
		"hostfwd=tcp:127.0.0.1:40001-10.0.2.15:7000",
		"hostfwd=tcp:127.0.0.1:40002-10.0.2.15:10250", "hostfwd=tcp:127.0.0.1:40003-10.0.2.15:10251",
		"-accel tcg,thread=multi", "-cpu qemu64", "-smp 2", "-m 3072", "-no-reboot",
		"local,path=/s,mount_tag=host0",
	} {
		if !strings.Contains(joined, want) {
			t.Errorf("qemu argv lacks %q:\n%s", want, joined)
		}
	}
}
