package operator

import (
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

var _ = Describe("The agent DaemonSet", Ordered, func() {
	key := types.NamespacedName{Namespace: operatorNamespace, Name: AgentName}

	getAgent := func(g Gomega) *appsv1.DaemonSet {
		ds := &appsv1.DaemonSet{}
		g.Expect(k8sClient.Get(ctx, key, ds)).To(Succeed())
		return ds
	}

	// expectRendered checks the fields the operator renders, as the API server stored them.
	expectRendered := func(g Gomega, ds *appsv1.DaemonSet) {
		want := RenderAgentDaemonSet(agentConfig)
		spec := ds.Spec.Template.Spec
		g.Expect(ds.Labels).To(Equal(want.Labels))
		g.Expect(ds.Spec.Selector).To(Equal(want.Spec.Selector))
		g.Expect(ds.Spec.UpdateStrategy).To(Equal(want.Spec.UpdateStrategy))
		g.Expect(spec.HostNetwork).To(BeTrue())
		g.Expect(spec.DNSPolicy).To(Equal(want.Spec.Template.Spec.DNSPolicy))
		g.Expect(spec.ServiceAccountName).To(Equal("ipvs-operator-agent"))
		g.Expect(spec.PriorityClassName).To(Equal("system-node-critical"))
		g.Expect(spec.Tolerations).To(Equal(want.Spec.Template.Spec.Tolerations))
		g.Expect(spec.Volumes).To(HaveLen(3))
		g.Expect(spec.InitContainers).To(HaveLen(1))
		g.Expect(spec.InitContainers[0].SecurityContext).To(Equal(want.Spec.Template.Spec.InitContainers[0].SecurityContext))
		g.Expect(spec.InitContainers[0].Args).To(Equal(want.Spec.Template.Spec.InitContainers[0].Args))
		g.Expect(spec.Containers).To(HaveLen(1))
		got, wantC := spec.Containers[0], want.Spec.Template.Spec.Containers[0]
		g.Expect(got.Image).To(Equal(agentConfig.Image))
		g.Expect(got.Command).To(Equal([]string{"/agent"}))
		g.Expect(got.Args).To(Equal(wantC.Args))
		g.Expect(got.Env).To(Equal(wantC.Env))
		g.Expect(got.Ports).To(Equal(wantC.Ports))
		g.Expect(got.SecurityContext).To(Equal(wantC.SecurityContext))
		g.Expect(got.VolumeMounts).To(Equal(wantC.VolumeMounts))
		g.Expect(got.ReadinessProbe.HTTPGet.Path).To(Equal("/readyz"))
		g.Expect(got.LivenessProbe.HTTPGet.Path).To(Equal("/healthz"))
	}

	It("is created at start, as rendered, and applied by the operator's field manager", func() {
		var ds *appsv1.DaemonSet
		Eventually(func(g Gomega) {
			ds = getAgent(g)
			expectRendered(g, ds)
		}).Should(Succeed())

		Expect(ds.ManagedFields).To(ContainElement(And(
			HaveField("Manager", FieldOwner),
			HaveField("Operation", metav1.ManagedFieldsOperationApply),
		)), "the DaemonSet should be server-side applied by %q", FieldOwner)
	})

	It("is restored when deleted", func() {
		old := getAgent(Default)
		Expect(k8sClient.Delete(ctx, old)).To(Succeed())

		Eventually(func(g Gomega) {
			ds := getAgent(g)
			g.Expect(ds.UID).NotTo(Equal(old.UID), "still the deleted DaemonSet")
			expectRendered(g, ds)
		}).Should(Succeed())
	})

	It("is restored when someone edits what the operator renders", func() {
		ds := getAgent(Default)
		ds.Spec.Template.Spec.HostNetwork = false
		ds.Spec.Template.Spec.Containers[0].Image = "example.test/someone-else:latest"
		ds.Spec.Template.Spec.Containers[0].Args = []string{"--scope=all"}
		ds.Spec.Template.Spec.Containers[0].SecurityContext.Capabilities.Add = append(
			ds.Spec.Template.Spec.Containers[0].SecurityContext.Capabilities.Add, "SYS_ADMIN")
		delete(ds.Labels, "app.kubernetes.io/part-of")
		Expect(k8sClient.Update(ctx, ds)).To(Succeed())

		Eventually(func(g Gomega) {
			expectRendered(g, getAgent(g))
		}).Should(Succeed())
	})

	It("leaves alone what it does not render (server-side apply semantics)", func() {
		// An annotation someone adds, together with an edit that forces a reconcile.
		ds := getAgent(Default)
		patch := client.MergeFrom(ds.DeepCopy())
		if ds.Annotations == nil {
			ds.Annotations = map[string]string{}
		}
		ds.Annotations["example.test/owner"] = "platform-team"
		ds.Spec.Template.Spec.Containers[0].Image = "example.test/someone-else:latest"
		Expect(k8sClient.Patch(ctx, ds, patch)).To(Succeed())

		Eventually(func(g Gomega) {
			got := getAgent(g)
			expectRendered(g, got)
			g.Expect(got.Annotations).To(HaveKeyWithValue("example.test/owner", "platform-team"))
		}).Should(Succeed())
	})
})
