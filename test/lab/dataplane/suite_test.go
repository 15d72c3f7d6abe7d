//go:build lab

// Package dataplane_test runs the shared dataplane scenarios (test/dataplane) in the lab: a real control
// plane on the host and two nodes in a qemu VM with Debian's kernel, where Services are reached through real
// IPVS by real packets. The operator is installed from config/ and the agents it renders run on the nodes.
package dataplane_test

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ipvs-operator/ipvs-operator/test/dataplane"
	"github.com/ipvs-operator/ipvs-operator/test/install"
	"github.com/ipvs-operator/ipvs-operator/test/lab"
)

var theLab *lab.Lab

func TestLabDataplane(t *testing.T) {
	RegisterFailHandler(Fail)
	suite, reporter := GinkgoConfiguration()
	// The scenarios share one cluster and run serially: one VM on 2 cores is the whole budget.
	suite.Timeout = 45*time.Minute + dataplane.ChurnExtraTime()
	RunSpecs(t, "Lab dataplane (real kernel IPVS)", suite, reporter)
}

var _ = BeforeSuite(func(ctx SpecContext) {
	root, err := filepath.Abs(filepath.Join("..", "..", ".."))
	Expect(err).NotTo(HaveOccurred())
	t0 := time.Now()
	// CoreDNS as in any cluster; the agents serve kube-dns once installed below.
	theLab, err = lab.Start(ctx, lab.Options{RepoRoot: root, Out: GinkgoWriter, ClusterDNS: true})
	Expect(err).NotTo(HaveOccurred())
	GinkgoWriter.Printf("lab started in %s: %s\n", time.Since(t0).Round(time.Millisecond), theLab.Timings)

	t1 := time.Now()
	// The kind suite installs and waits with the same two calls (test/install). The lab runs no kube-proxy:
	// its agents serve every ClusterIP Service (scope all, lab.InstallOptions), as `make lab-up` installs them.
	opts := lab.InstallOptions(root)
	// The scenarios restart agents and look at the table right after: audit often.
	opts.Args = []string{"--agent-audit-period=10s"}
	opts.Log = GinkgoWriter
	Expect(install.Kustomize(ctx, theLab.Client(), opts)).To(Succeed())
	if err := install.WaitReady(ctx, theLab.Client(), theLab.Nodes(), 3*time.Minute); err != nil {
		theLab.Diagnose(ctx, GinkgoWriter)
		Fail(fmt.Sprintf("operator and the agents it renders: %v", err))
	}
	GinkgoWriter.Printf("operator installed and agents ready in %s\n", time.Since(t1).Round(time.Millisecond))
}, NodeTimeout(20*time.Minute))

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

var _ = Describe("the lab", Ordered, func() {
	// First: it reads the init containers' logs as the install left them.
	registerModules()
	dataplane.RegisterScenarios(func() dataplane.Driver { return theLab })
	dataplane.RegisterAgentPorts(func() dataplane.Driver { return theLab })
	dataplane.RegisterPrivileges(func() dataplane.Driver { return theLab }, true)
	dataplane.RegisterPodDetection(func() dataplane.Driver { return theLab })
	dataplane.RegisterSCTP(func() dataplane.Driver { return theLab })
	dataplane.RegisterDualStack(func() dataplane.Driver { return theLab })
	registerClusterDNS()
	registerKubectl()
	// Last: it removes the install.
	dataplane.RegisterUninstall(func() dataplane.Driver { return theLab })
	// With no agent left: kube-proxy's IPVS mode, then the agents taking over from it (removes its install).
	dataplane.RegisterTakeover(func() dataplane.Driver { return theLab }, takeoverHooks)
	// Then kube-proxy's iptables mode next to the agents, and a Service moving over by its label.
	dataplane.RegisterSideBySide(func() dataplane.Driver { return theLab }, takeoverHooks)
	It("runs agent --cleanup by itself when no agent runs, and creates nothing", func(ctx SpecContext) {
		for _, node := range theLab.Nodes() {
			out, err := theLab.AgentExec(ctx, node, "--cleanup")
			Expect(err).NotTo(HaveOccurred(), "agent --cleanup on %s:\n%s", node, out)
			Expect(out).To(ContainSubstring("No agent runs on this node; cleaning up here."), "on %s", node)
			Expect(out).To(ContainSubstring("no virtual server of the agent's was left"), "on %s", node)
			out, err = theLab.NodeExec(ctx, node, "ip", "link", "show", "ipvs0")
			Expect(err).To(HaveOccurred(), "agent --cleanup created ipvs0 on %s:\n%s", node, out)
		}
	})
})
