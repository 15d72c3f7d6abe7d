//go:build lab

package upstream

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ipvs-operator/ipvs-operator/test/lab"
	"github.com/ipvs-operator/ipvs-operator/test/lab/guest"
)

// The runs this suite knows. UPSTREAM_SET picks one (default full); UPSTREAM_FOCUS replaces its focus while
// iterating on one spec.
//   - full (`make test-upstream`): every sig-network spec about ClusterIP behaviour, dual-stack's included (the
//     lab is dual-stack);
//   - smoke (`make test`): a few minutes of the stable core: basic and multiport endpoints, session affinity,
//     rejection without endpoints, the service-proxy-name and headless labels, same port on two protocols.
var focusSets = map[string]string{
	"full": `\[sig-network\] (Services |EndpointSlice |EndpointSliceMirroring |Conntrack |Networking Granular Checks: Services |\[Feature:IPv6DualStack\] )`,
	"smoke": `\[sig-network\] Services (should serve a basic endpoint from pods|should serve multiport endpoints from pods|` +
		`should have session affinity work for service with type clusterIP|should be rejected when no endpoints exist|` +
		`should implement service.kubernetes.io/service-proxy-name|should implement service.kubernetes.io/headless|` +
		`should serve endpoints on same port and different protocols)`,
}

// upstreamImageMap maps upstream's e2e images to the real programs: agnhost (built from the same
// k8s.io/kubernetes as e2e.test; ENTRYPOINT /agnhost, CMD pause, as in its Dockerfile) and busybox (the VM's
// own busybox, every applet by name: its containers name their command, sh or sleep, and its sh runs its own
// nc and wget, as in that image).
const upstreamImageMap = "e2e-test-images/agnhost=" + lab.GuestBin + ":/agnhost:pause," +
	"e2e-test-images/busybox=" + guest.BusyboxImageDir + "," +
	"e2e-test-images/regression-issue-74839=" + lab.GuestBin + ":/regression-issue-74839"

var theLab *lab.Lab

// suiteTimeout bounds e2e.test (UPSTREAM_TIMEOUT, default 170m); at the timeout ginkgo still writes the JUnit
// report, with the specs it did not reach marked as such.
func suiteTimeout() string {
	if t := os.Getenv("UPSTREAM_TIMEOUT"); t != "" {
		return t
	}
	return "170m"
}

func TestUpstream(t *testing.T) {
	RegisterFailHandler(Fail)
	suite, reporter := GinkgoConfiguration()
	suite.Timeout = 3 * time.Hour
	RunSpecs(t, "Kubernetes' own sig-network e2e specs in the lab", suite, reporter)
}

var root, kubeBin string

var _ = BeforeSuite(func(ctx SpecContext) {
	var err error
	root, err = filepath.Abs(filepath.Join("..", ".."))
	Expect(err).NotTo(HaveOccurred())
	kubeBin = filepath.Join(root, "bin", "k8s", lab.KubeVersion)
	build := exec.CommandContext(ctx, filepath.Join(root, "hack", "build-kube-e2e.sh"))
	build.Stdout, build.Stderr = GinkgoWriter, GinkgoWriter
	Expect(build.Run()).To(Succeed(), "hack/build-kube-e2e.sh")
	theLab, err = lab.Start(ctx, lab.Options{
		RepoRoot: root, Out: GinkgoWriter, ClusterDNS: true, InstallOperator: true,
		ImageMap:      lab.DefaultImageMap + "," + upstreamImageMap,
		ExtraBinaries: []string{filepath.Join(kubeBin, "agnhost"), filepath.Join(kubeBin, "regression-issue-74839")},
		// Deleted pods keep serving for their grace period (up to 2 minutes), as with a real kubelet: the
		// terminating-endpoint specs delete a pod with a 600 s grace period and then expect it to answer.
		KubeletArgs: []string{"--max-grace-period=2m"},
	})
	Expect(err).NotTo(HaveOccurred())
	GinkgoWriter.Printf("lab: %s\n", theLab.Timings)
}, NodeTimeout(30*time.Minute))

// A failed spec keeps the lab's run directory (the guest's kubelet and agent logs): AfterSuite's own report
// cannot tell, and Stop would remove it.
var _ = ReportAfterEach(func(r SpecReport) {
	if r.Failed() && theLab != nil {
		theLab.Keep()
	}
})

var _ = AfterSuite(func() {
	if theLab == nil {
		return
	}
	GinkgoWriter.Printf("lab logs: %s (kept if a spec failed or with LAB_KEEP=1)\n", theLab.LogDir())
	Expect(theLab.Stop()).To(Succeed())
})

var _ = It("passes upstream's sig-network ClusterIP specs with the agents serving every Service", func(ctx SpecContext) {
	set := os.Getenv("UPSTREAM_SET")
	if set == "" {
		set = "full"
	}
	focus := os.Getenv("UPSTREAM_FOCUS")
	if focus == "" {
		focus = focusSets[set]
	}
	Expect(focus).NotTo(BeEmpty(), "UPSTREAM_SET=%s is not one of full, smoke", set)
	f, err := os.Open(filepath.Join(root, "test", "upstream", "skip.txt"))
	Expect(err).NotTo(HaveOccurred())
	skips, err := ParseSkipList(f)
	f.Close()
	Expect(err).NotTo(HaveOccurred())

	reportDir := os.Getenv("UPSTREAM_REPORT_DIR")
	if reportDir == "" {
		reportDir = filepath.Join(root, ".upstream", set)
	}
	Expect(os.RemoveAll(reportDir)).To(Succeed())
	Expect(os.MkdirAll(reportDir, 0o755)).To(Succeed())
	logPath := filepath.Join(reportDir, "e2e.log")
	logFile, err := os.Create(logPath)
	Expect(err).NotTo(HaveOccurred())
	defer logFile.Close()

	args := []string{
		"--kubeconfig=" + theLab.Kubeconfig(),
		"--kubectl-path=" + filepath.Join(kubeBin, "kubectl"),
		// skeleton: no cloud and no SSH to the nodes ("local" would try SSH for the specs that need it).
		"--provider=skeleton",
		"--report-dir=" + reportDir,
		"--e2e-output-dir=" + reportDir,
		"--ginkgo.focus=" + focus,
		"--ginkgo.skip=" + SkipRegexp(skips),
		"--ginkgo.no-color",
		"--ginkgo.timeout=" + suiteTimeout(),
		"--allowed-not-ready-nodes=0",
		"--dump-logs-on-failure=false",
	}
	GinkgoWriter.Printf("e2e.test %s\n(output: %s)\n", strings.Join(args, " "), logPath)
	t0 := time.Now()
	cmd := exec.CommandContext(ctx, filepath.Join(kubeBin, "e2e.test"), args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	runErr := cmd.Run()
	elapsed := time.Since(t0).Round(time.Second)

	junit, err := os.Open(filepath.Join(reportDir, "junit_01.xml"))
	Expect(err).NotTo(HaveOccurred(), "e2e.test wrote no JUnit report (exit: %v); see %s", runErr, logPath)
	defer junit.Close()
	s, err := Summarize(junit, regexp.MustCompile(focus), skips)
	Expect(err).NotTo(HaveOccurred())
	var b bytes.Buffer
	s.Write(&b)
	fmt.Fprintf(&b, "e2e.test took %s; JUnit report %s, output %s\n", elapsed, junit.Name(), logPath)
	Expect(os.WriteFile(filepath.Join(reportDir, "summary.txt"), b.Bytes(), 0o644)).To(Succeed())
	fmt.Fprint(GinkgoWriter, b.String())
	AddReportEntry("upstream e2e summary", b.String())
	Expect(s.Failed).To(BeZero(), "failed specs:\n%s", b.String())
	Expect(runErr).NotTo(HaveOccurred(), "e2e.test failed; see %s", logPath)
}, NodeTimeout(175*time.Minute))
