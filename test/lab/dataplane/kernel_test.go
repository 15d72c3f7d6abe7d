//go:build lab

package dataplane_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ipvs-operator/ipvs-operator/test/lab"
	"github.com/ipvs-operator/ipvs-operator/test/lab/labd"
)

// The real-kernel tests (build tag kernel) cannot run on a host without IPVS; here they run in the lab VM on
// Debian's kernel, each in a fresh network namespace of its own.
var _ = Describe("the kernel tests in the lab VM", func() {
	DescribeTable("pass, with no skip",
		func(ctx SpecContext, pkg, binary string, minPassed int) {
			bin := filepath.Join(theLab.ShareDir(), "bin", binary)
			build := exec.CommandContext(ctx, "go", "test", "-c", "-tags", "kernel", "-o", bin, pkg)
			build.Dir = filepath.Join("..", "..", "..")
			build.Env = append(os.Environ(), "CGO_ENABLED=0")
			out, err := build.CombinedOutput()
			Expect(err).NotTo(HaveOccurred(), "building the kernel tests of %s: %s", pkg, out)

			res, err := theLab.Run(ctx, labd.ExecRequest{
				Argv:           []string{lab.GuestBin + "/" + binary, "-test.v", "-test.run", "^TestKernel"},
				TimeoutSeconds: 300,
				Combined:       true,
				Dir:            "/tmp",
			})
			Expect(err).NotTo(HaveOccurred())
			GinkgoWriter.Println(res.Stdout)
			Expect(res.ExitCode).To(BeZero(), "kernel tests of %s failed in the VM:\n%s", pkg, res.Stdout)
			Expect(res.Stdout).NotTo(ContainSubstring("--- SKIP"), "no kernel test may skip in the lab VM")
			Expect(strings.Count(res.Stdout, "--- PASS: TestKernel")).To(BeNumerically(">=", minPassed))
		},
		Entry("the ipvs library (netlink, VIPs, nftables, sysctls, ipvsadm -Sn parity)", "./ipvs", "ipvs-kernel.test", 6),
		Entry("the sync engine (adopt, no-op restart, audit repair, cleanup, drift canary)", "./ipvs/sync", "sync-kernel.test", 2),
	)
})
