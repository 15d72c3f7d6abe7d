//go:build lab

package dataplane_test

import (
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ipvs-operator/ipvs-operator/test/lab"
	"github.com/ipvs-operator/ipvs-operator/test/lab/labd"
)

// kernelTests is one package's tests that need root and a kernel with IPVS, nf_tables and network
// namespaces: on a host without them (not root, or a kernel without IPVS) they skip, so there they prove
// nothing. Here they run in the lab VM on Debian's kernel, as root, each in a fresh network namespace of its
// own, and a skip is a failure.
type kernelTests struct {
	pkg    string // relative to the repository root
	binary string
	tags   string
	// run selects the tests (-test.run); skip leaves out those that only make sense on a host without
	// these kernel features (-test.skip), which would otherwise skip here by design.
	run, skip string
	// mustPass matches the top-level PASS lines of the tests that need the kernel; at least minPassed must
	// appear, so a renamed or filtered-out test cannot make the entry pass vacuously.
	mustPass  *regexp.Regexp
	minPassed int
}

var _ = Describe("the kernel tests in the lab VM", func() {
	DescribeTable("pass, with no skip",
		func(ctx SpecContext, k kernelTests) {
			bin := filepath.Join(theLab.ShareDir(), "bin", k.binary)
			root := filepath.Join("..", "..", "..")
			build := exec.CommandContext(ctx, "go", "test", "-c", "-tags", k.tags, "-o", bin, "./"+k.pkg)
			build.Dir = root
			build.Env = append(os.Environ(), "CGO_ENABLED=0")
			out, err := build.CombinedOutput()
			Expect(err).NotTo(HaveOccurred(), "building the tests of %s: %s", k.pkg, out)

			// The binary runs in a copy of the package's testdata (golden files, fuzz seeds), as `go test`
			// would run it in the package's directory.
			dir := filepath.Join(theLab.ShareDir(), "src", filepath.FromSlash(k.pkg))
			Expect(os.RemoveAll(dir)).To(Succeed())
			Expect(os.MkdirAll(dir, 0o755)).To(Succeed())
			if testdata := filepath.Join(root, k.pkg, "testdata"); exists(testdata) {
				Expect(os.CopyFS(filepath.Join(dir, "testdata"), os.DirFS(testdata))).To(Succeed())
			}

			argv := []string{lab.GuestBin + "/" + k.binary, "-test.v", "-test.count=1", "-test.run", k.run}
			if k.skip != "" {
				argv = append(argv, "-test.skip", k.skip)
			}
			res, err := theLab.Run(ctx, labd.ExecRequest{
				Argv:           argv,
				TimeoutSeconds: 300,
				Combined:       true,
				Dir:            path.Join(lab.GuestShare, "src", k.pkg),
			})
			Expect(err).NotTo(HaveOccurred())
			GinkgoWriter.Println(res.Stdout)
			Expect(res.ExitCode).To(BeZero(), "tests of %s failed in the VM:\n%s", k.pkg, res.Stdout)
			Expect(res.Stdout).NotTo(ContainSubstring("--- SKIP"), "no test may skip in the lab VM")
			Expect(len(k.mustPass.FindAllString(res.Stdout, -1))).To(BeNumerically(">=", k.minPassed),
				"tests of %s matching %s passed in the VM", k.pkg, k.mustPass)
		},
		Entry("the ipvs library (netlink, VIPs, nftables, sysctls, ipvsadm -Sn parity), all its tests", kernelTests{
			pkg: "ipvs", binary: "ipvs-kernel.test", tags: "kernel", run: ".",
			// The first checks the error of a kernel WITHOUT IPVS; the second needs a C compiler.
			skip:     "^(TestNewNetlinkWithoutIPVS|TestSortMatchesGlibcQsort)$",
			mustPass: regexp.MustCompile(`(?m)^--- PASS: Test(Kernel|VIPs)\w*`), minPassed: 8,
		}),
		Entry("the nftables table (rules against nft's own listing, repair, large updates), all its tests", kernelTests{
			pkg: "ipvs/nftrules", binary: "nftrules-kernel.test", tags: "kernel", run: ".",
			mustPass:  regexp.MustCompile(`(?m)^--- PASS: Test(TableAgainstKernel|EnsureRepairs|LargeUpdate|InvalidInput|Exists)\b`),
			minPassed: 5,
		}),
		Entry("the sync engine (adopt, no-op restart, audit repair, cleanup, drift canary)", kernelTests{
			pkg: "ipvs/syncer", binary: "syncer-kernel.test", tags: "kernel", run: "^TestKernel",
			mustPass: regexp.MustCompile(`(?m)^--- PASS: TestKernel\w*`), minPassed: 2,
		}),
		Entry("the takeover from kube-proxy (its iptables-nft and iptables-legacy chains and ipsets removed, a ClusterIP on two devices)", kernelTests{
			pkg: "ipvs/takeover", binary: "takeover-kernel.test", tags: "kernel", run: "^TestKernel",
			mustPass: regexp.MustCompile(`(?m)^--- PASS: TestKernel(Takeover|LegacyLeftovers)\b`), minPassed: 2,
		}),
		Entry("the echo server and client over SCTP (no SCTP in the host kernel)", kernelTests{
			pkg: "test/lab/echo", binary: "echo-sctp.test", run: "^TestSCTP",
			mustPass: regexp.MustCompile(`(?m)^--- PASS: TestSCTP\w*`), minPassed: 3,
		}),
		Entry("the agent's per-node lock (per network namespace), all its tests", kernelTests{
			pkg: "controllers/agent/nodelock", binary: "nodelock.test", tags: "kernel", run: ".",
			mustPass: regexp.MustCompile(`(?m)^--- PASS: TestLockIsPerNetworkNamespace\b`), minPassed: 1,
		}),
	)
})

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
