//go:build lab

package dataplane_test

import (
	"os"
	"path/filepath"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ipvs-operator/ipvs-operator/controllers/operator"
	"github.com/ipvs-operator/ipvs-operator/test/lab/guest"
)

// The agent's init container (`agent --load-kernel-modules`) loads the modules on a node as it finds them.
// With LAB_KERNEL=6.12 the guest leaves IPVS, its schedulers and dummy to it, as Debian ships them:
// .ko.xz, with no modprobe in the agent's image, so this proves the compressed path on a real kernel.
//
// It reads the init containers' logs, which the lab kubelet appends to across restarts, so it must run
// before any spec restarts an agent (the privileges spec unloads a scheduler and restarts an agent, whose
// init container then inserts it): the suite registers it first in its ordered container.
func registerModules() {
	Describe("the agent's init container", func() {
		It("loaded the kernel modules the agent needs, compressed ones included", func(ctx SpecContext) {
			logs, err := filepath.Glob(filepath.Join(theLab.ShareDir(), "logs", "pods", "*_"+operator.AgentModulesInitContainerName+".log"))
			Expect(err).NotTo(HaveOccurred())
			Expect(len(logs)).To(BeNumerically(">=", len(theLab.Nodes())), "one init container log per node at least")
			var all strings.Builder
			for _, f := range logs {
				b, err := os.ReadFile(f)
				Expect(err).NotTo(HaveOccurred())
				Expect(string(b)).To(ContainSubstring("kernel modules loaded: ip_vs "), "%s", f)
				all.Write(b)
			}
			GinkgoWriter.Printf("init container logs (kernel %s):\n%s\n", theLab.Kernel().Version, all.String())
			out, err := theLab.Exec(ctx, "", "ls", "/sys/module")
			Expect(err).NotTo(HaveOccurred())
			for _, m := range []string{"ip_vs", "ip_vs_rr", "ip_vs_mh", "dummy"} {
				Expect(strings.Fields(out)).To(ContainElement(m), "/sys/module")
			}
			if theLab.Kernel().Choice != guest.Kernel612 {
				// 6.1's modules are uncompressed and the guest loaded them all at boot: nothing left to insert.
				Expect(all.String()).NotTo(ContainSubstring("inserted "))
				return
			}
			// Both nodes share the VM's kernel. Their init containers run at once, and since 6.4 concurrent
			// finit_module calls on one file share the first call's result, so each may report the insert.
			for _, m := range []string{"ip_vs kernel/net/netfilter/ipvs/ip_vs.ko.xz", "ip_vs_rr kernel/net/netfilter/ipvs/ip_vs_rr.ko.xz",
				"ip_vs_mh kernel/net/netfilter/ipvs/ip_vs_mh.ko.xz", "dummy kernel/drivers/net/dummy.ko.xz"} {
				name, file, _ := strings.Cut(m, " ")
				Expect(all.String()).To(ContainSubstring("inserted "+name+" ("+file+", finit_module, decompressed by the kernel)"), "%s", name)
			}
		})
	})
}
