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

// The ipvs library's real-kernel tests (build tag kernel) cannot run on a host without IPVS; here they run in
// the lab VM on Debian's kernel, each in a fresh network namespace of its own.
var _ = Describe("the ipvs library on a real kernel", func() {
	It("passes its kernel tests in the lab VM", func(ctx SpecContext) {
		bin := filepath.Join(theLab.ShareDir(), "bin", "ipvs-kernel.test")
		build := exec.CommandContext(ctx, "go", "test", "-c", "-tags", "kernel", "-o", bin, "./ipvs")
		build.Dir = filepath.Join("..", "..", "..")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		out, err := build.CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), "building the kernel tests: %s", out)

		res, err := theLab.Run(ctx, labd.ExecRequest{
			Argv:           []string{lab.GuestBin + "/ipvs-kernel.test", "-test.v", "-test.run", "^TestKernel"},
			TimeoutSeconds: 300,
			Combined:       true,
			Dir:            "/tmp",
		})
		Expect(err).NotTo(HaveOccurred())
		GinkgoWriter.Println(res.Stdout)
		Expect(res.ExitCode).To(BeZero(), "kernel tests failed in the VM:\n%s", res.Stdout)
		Expect(res.Stdout).NotTo(ContainSubstring("--- SKIP"), "no kernel test may skip in the lab VM")
		Expect(strings.Count(res.Stdout, "--- PASS: TestKernel")).To(BeNumerically(">=", 6))
	})
})
