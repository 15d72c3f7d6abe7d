//go:build e2e

// Package e2e runs ipvs-operator in a kind cluster: it builds the image, creates the cluster, installs the operator
// (with kustomize, or through OLM with E2E_OLM=true), waits for an agent on every node, checks the installation,
// and runs the data-path scenarios of test/dataplane through a Driver for kind.
//
// It needs rootful Docker, kind and kubectl, and a Docker host whose kernel has IPVS; run it with `make
// test-e2e`. The environment variables it reads are described in config.go. `make test-e2e-dryrun`
// (dryrun_test.go) checks its command lines without Docker; the README's kind section lists the assumptions
// about kind, Docker and the kubelet that only a run on such a host can confirm.
package e2e

import (
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ipvs-operator/ipvs-operator/test/dataplane"
)

func TestE2E(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "ipvs-operator e2e (kind)")
}

var (
	cfg config
	c   *cluster
	drv kindDriver
	// failed is set when setup or any spec fails, so that tearDown exports the cluster's logs.
	failed bool
)

var _ = BeforeSuite(func(ctx SpecContext) {
	var err error
	cfg, err = loadConfig()
	Expect(err).NotTo(HaveOccurred())
	c, err = newCluster(cfg, execRunner{log: GinkgoWriter}, GinkgoWriter)
	drv = kindDriver{c: c}
	if err == nil {
		err = c.setUp(ctx, func(step string) { By(step) })
	}
	if err != nil {
		failed = true
	}
	Expect(err).NotTo(HaveOccurred())
}, NodeTimeout(45*time.Minute))

var _ = ReportAfterEach(func(r SpecReport) {
	if r.Failed() {
		failed = true
	}
})

var _ = AfterSuite(func(ctx SpecContext) {
	if c != nil {
		c.tearDown(ctx, failed)
	}
}, NodeTimeout(10*time.Minute))

// One top-level container, because Ginkgo shuffles top-level containers and the uninstall, which removes
// the install, must run last; inside it the specs run in the order written.
var _ = Describe("ipvs-operator", func() {
	installationSpecs()
	servicePolicySpecs()
	// The data-path scenarios the lab runs too (test/dataplane), against this cluster.
	Describe("Data path", func() {
		dataplane.RegisterScenarios(func() dataplane.Driver { return drv })
		dataplane.RegisterAgentPorts(func() dataplane.Driver { return drv })
		// SCTP needs the sctp module in the developer's kernel (loaded on the first SCTP socket).
		dataplane.RegisterSCTP(func() dataplane.Driver { return drv })
		// Without unloading a module: a kind node shares the developer's kernel.
		dataplane.RegisterPrivileges(func() dataplane.Driver { return drv }, false)
	})
	dataplane.RegisterUninstall(func() dataplane.Driver { return drv })
})
