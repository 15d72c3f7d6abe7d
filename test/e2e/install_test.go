//go:build e2e

package e2e

import (
	"path/filepath"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1alpha1 "github.com/ipvs-operator/ipvs-operator/api/v1alpha1"
)

// installationSpecs checks the install. The suite declares it inside its one top-level container.
func installationSpecs() bool {
	return Describe("Installation", func() {
		It("runs one ready agent on every node", func(ctx SpecContext) {
			var pods corev1.PodList
			Expect(c.client.List(ctx, &pods, client.InNamespace(operatorNamespace),
				client.MatchingLabels{"app.kubernetes.io/name": agentDaemonSet})).To(Succeed())
			perNode := map[string]int{}
			for _, p := range pods.Items {
				Expect(isReady(&p)).To(BeTrue(), "agent pod %s on %s is not ready", p.Name, p.Spec.NodeName)
				perNode[p.Spec.NodeName]++
			}
			for _, n := range c.nodes {
				Expect(perNode).To(HaveKeyWithValue(n, 1), "node %s", n)
			}
		})

		It("runs the operator as a restricted, ready Deployment", func(ctx SpecContext) {
			var d appsv1.Deployment
			Expect(c.client.Get(ctx, types.NamespacedName{Namespace: operatorNamespace, Name: operatorDeployment}, &d)).To(Succeed())
			Expect(d.Status.ReadyReplicas).To(BeNumerically(">=", 1))
			pod := d.Spec.Template.Spec
			Expect(pod.SecurityContext.RunAsNonRoot).To(HaveValue(BeTrue()))
			Expect(pod.Containers[0].SecurityContext.ReadOnlyRootFilesystem).To(HaveValue(BeTrue()))
		})

		It("serves the API server's kubernetes Service to pods when there is no kube-proxy", func(ctx SpecContext) {
			if cfg.KubeProxyMode != "none" {
				Skip("kube-proxy serves the kubernetes Service in this cluster")
			}
			// CoreDNS reads Services and EndpointSlices through the kubernetes Service's ClusterIP: it becomes
			// available only when the agents serve that ClusterIP.
			Eventually(func(g Gomega) {
				var d appsv1.Deployment
				g.Expect(c.client.Get(ctx, types.NamespacedName{Namespace: "kube-system", Name: "coredns"}, &d)).To(Succeed())
				g.Expect(d.Status.AvailableReplicas).To(Equal(*d.Spec.Replicas))
			}).WithContext(ctx).WithTimeout(5 * time.Minute).WithPolling(2 * time.Second).Should(Succeed())
		})

		It("has a succeeded ClusterServiceVersion when installed through OLM", func(ctx SpecContext) {
			if !cfg.OLM {
				Skip("installed with kustomize")
			}
			var csvs unstructured.UnstructuredList
			csvs.SetGroupVersionKind(schema.GroupVersionKind{Group: "operators.coreos.com", Version: "v1alpha1", Kind: "ClusterServiceVersionList"})
			Expect(c.client.List(ctx, &csvs, client.InNamespace(operatorNamespace))).To(Succeed())
			phases := map[string]string{}
			for _, csv := range csvs.Items {
				phase, _, _ := unstructured.NestedString(csv.Object, "status", "phase")
				phases[csv.GetName()] = phase
			}
			Expect(phases).To(HaveKeyWithValue("ipvs-operator.v"+bundleVersion(), "Succeeded"))
		})
	})
}

// servicePolicySpecs checks the ServicePolicy API. The suite declares it inside its one top-level container.
func servicePolicySpecs() bool {
	return Describe("ServicePolicy", func() {
		var ns string

		BeforeEach(func(ctx SpecContext) {
			n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "e2e-policy-"}}
			Expect(c.client.Create(ctx, n)).To(Succeed())
			ns = n.Name
			DeferCleanup(func(ctx SpecContext) {
				Expect(client.IgnoreNotFound(c.client.Delete(ctx, n))).To(Succeed())
			})
		})

		It("accepts the samples and reports their status", func(ctx SpecContext) {
			samples, err := c.cmd.Run(ctx, nil, nil, cfg.Kustomize, "build", filepath.Join(cfg.RepoRoot, "config", "samples"))
			Expect(err).NotTo(HaveOccurred())
			_, err = c.kubectl(ctx, samples, "apply", "-n", ns, "-f", "-")
			Expect(err).NotTo(HaveOccurred())

			Eventually(func(g Gomega) {
				var list lbv1alpha1.ServicePolicyList
				g.Expect(c.client.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
				g.Expect(list.Items).To(HaveLen(2))
				for _, p := range list.Items {
					ready := meta.FindStatusCondition(p.Status.Conditions, lbv1alpha1.ConditionReady)
					g.Expect(ready).NotTo(BeNil(), "policy %s has no Ready condition", p.Name)
					g.Expect(ready.ObservedGeneration).To(Equal(p.Generation))
					g.Expect(p.Status.ObservedGeneration).To(Equal(p.Generation))
				}
			}).WithContext(ctx).WithTimeout(time.Minute).WithPolling(time.Second).Should(Succeed())
		})

		It("is refused by the API server when its scheduler is unknown", func(ctx SpecContext) {
			p := &lbv1alpha1.ServicePolicy{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "bad"},
				Spec: lbv1alpha1.ServicePolicySpec{
					Selector:  &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
					Scheduler: lbv1alpha1.Scheduler("fastest"),
				},
			}
			err := c.client.Create(ctx, p)
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "got %v", err)
		})
	})
}

func isReady(p *corev1.Pod) bool {
	for _, cond := range p.Status.Conditions {
		if cond.Type == corev1.PodReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}

// bundleVersion is the version of the committed bundle (VERSION in the Makefile).
func bundleVersion() string { return env("VERSION", "0.1.0") }
