//go:build lab

// Package detectlocal_test runs the lab as a cluster whose CNI does not use the Nodes' pod CIDRs (Calico
// IPAM, Cilium cluster-pool, AWS VPC CNI): the lab kubelets leave spec.podCIDRs empty, and the operator is
// installed with --agent-detect-local-mode=ClusterCIDR and the cluster's pod CIDR. The agents must be ready,
// serve pods, and keep the outside host out, forged pod addresses included.
package detectlocal_test

import (
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ipvs-operator/ipvs-operator/test/dataplane"
	"github.com/ipvs-operator/ipvs-operator/test/install"
	"github.com/ipvs-operator/ipvs-operator/test/lab"
	"github.com/ipvs-operator/ipvs-operator/test/lab/topology"
)

var theLab *lab.Lab

func TestLabDetectLocal(t *testing.T) {
	RegisterFailHandler(Fail)
	suite, reporter := GinkgoConfiguration()
	suite.Timeout = 30 * time.Minute
	RunSpecs(t, "Lab without Node pod CIDRs (detect-local mode ClusterCIDR)", suite, reporter)
}

// labImage is the image the operator renders for the agent; the lab kubelet maps it to the local binary.
const labImage = "ghcr.io/ipvs-operator/ipvs-operator:lab"

var _ = BeforeSuite(func(ctx SpecContext) {
	root, err := filepath.Abs(filepath.Join("..", "..", ".."))
	Expect(err).NotTo(HaveOccurred())
	theLab, err = lab.Start(ctx, lab.Options{RepoRoot: root, Out: GinkgoWriter, KubeletArgs: []string{"--no-node-pod-cidr"}})
	Expect(err).NotTo(HaveOccurred())
	Expect(install.Kustomize(ctx, theLab.Client(), install.Options{
		RepoRoot:  root,
		Kustomize: filepath.Join(root, "bin", "kustomize"),
		Image:     labImage,
		Args: []string{"--agent-audit-period=10s",
			"--agent-detect-local-mode=ClusterCIDR", "--agent-cluster-cidr=" + topology.PodCIDRs()},
		Log: GinkgoWriter,
	})).To(Succeed())
	// Ready agents: in the default NodeCIDR mode they would not be (no pod CIDRs on their Nodes).
	Expect(install.WaitReady(ctx, theLab.Client(), theLab.Nodes(), 3*time.Minute)).To(Succeed(), "agents rendered by the operator")
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

var _ = Describe("a lab whose Nodes have no pod CIDRs", Ordered, func() {
	It("has Nodes without spec.podCIDRs, and agents rendered with the mode the operator was given", func(ctx SpecContext) {
		for _, name := range theLab.Nodes() {
			n := &corev1.Node{}
			Expect(theLab.Client().Get(ctx, client.ObjectKey{Name: name}, n)).To(Succeed())
			Expect(n.Spec.PodCIDRs).To(BeEmpty(), "node %s", name)
			Expect(n.Spec.PodCIDR).To(BeEmpty(), "node %s", name)
		}
		ds := &appsv1.DaemonSet{}
		Expect(theLab.Client().Get(ctx, client.ObjectKey{Namespace: install.Namespace, Name: install.AgentDaemonSet}, ds)).To(Succeed())
		Expect(ds.Spec.Template.Spec.Containers[0].Args).To(ContainElements(
			"--detect-local-mode=ClusterCIDR", "--cluster-cidr="+topology.PodCIDRs()))
	})
	dataplane.RegisterPodDetection(func() dataplane.Driver { return theLab })
})
