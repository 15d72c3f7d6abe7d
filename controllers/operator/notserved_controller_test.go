package operator

import (
	"context"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/ipvs-operator/ipvs-operator/api/v1alpha1"
)

// These specs run the NotServed reconciler in operators of their own (scope all), so that they can stop
// one and start another the way a restart or a leader change does.
var _ = Describe("NotServed events", Ordered, func() {
	var (
		ns           string
		stopOperator context.CancelFunc
	)

	startOperator := func() {
		mgr, err := ctrl.NewManager(cfg, ctrl.Options{
			Scheme:                 scheme,
			Metrics:                metricsserver.Options{BindAddress: "0"},
			HealthProbeBindAddress: "0",
			// Each spec's operator registers the same controller name again.
			Controller: config.Controller{SkipNameValidation: ptr.To(true)},
		})
		Expect(err).NotTo(HaveOccurred())
		Expect((&NotServedReconciler{
			Client:    mgr.GetClient(),
			APIReader: mgr.GetAPIReader(),
			Recorder:  mgr.GetEventRecorder("ipvs-operator"),
			ManageAll: true,
		}).SetupWithManager(mgr)).To(Succeed())
		mctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer GinkgoRecover()
			defer close(done)
			Expect(mgr.Start(mctx)).To(Succeed())
		}()
		stopOperator = func() { cancel(); <-done }
	}
	restartOperator := func() {
		stopOperator()
		startOperator()
	}

	// notServed returns the NotServed events recorded on the Service name, as notes with their counts.
	notServed := func(g Gomega, name string) []string {
		var list eventsv1.EventList
		g.Expect(k8sClient.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
		var notes []string
		for _, e := range list.Items {
			if e.Regarding.Kind == "Service" && e.Regarding.Name == name && e.Reason == EventReasonNotServed {
				g.Expect(e.Type).To(Equal(corev1.EventTypeWarning))
				g.Expect(e.ReportingController).To(Equal("ipvs-operator"))
				// A repeat of the same event would be a series on it, not a new event.
				g.Expect(e.Series).To(BeNil(), "event %q repeated", e.Note)
				notes = append(notes, e.Note)
			}
		}
		return notes
	}
	// expectNotes waits until exactly these notes are recorded on the Service, then checks that nothing more
	// comes for a while (a resync storm would).
	expectNotes := func(name string, substrings ...string) {
		GinkgoHelper()
		matchers := make([]any, len(substrings))
		for i, s := range substrings {
			matchers[i] = ContainSubstring(s)
		}
		Eventually(func(g Gomega) {
			g.Expect(notServed(g, name)).To(ConsistOf(matchers...))
		}).Should(Succeed())
		Consistently(func(g Gomega) {
			g.Expect(notServed(g, name)).To(ConsistOf(matchers...))
		}).WithTimeout(2 * time.Second).Should(Succeed())
	}
	// touch makes the operator look at the Service again without changing what it serves.
	touch := func(name string) {
		GinkgoHelper()
		svc := &corev1.Service{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, svc)).To(Succeed())
		patch := client.MergeFrom(svc.DeepCopy())
		if svc.Annotations == nil {
			svc.Annotations = map[string]string{}
		}
		svc.Annotations["touched"] = time.Now().Format(time.RFC3339Nano)
		Expect(k8sClient.Patch(ctx, svc, patch)).To(Succeed())
	}
	edit := func(name string, fn func(*corev1.Service)) {
		GinkgoHelper()
		svc := &corev1.Service{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, svc)).To(Succeed())
		fn(svc)
		Expect(k8sClient.Update(ctx, svc)).To(Succeed())
	}
	nodePortService := func(name string, labels map[string]string) *corev1.Service {
		GinkgoHelper()
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort,
				Ports: []corev1.ServicePort{{Name: "http", Port: 80, NodePort: 30080 + int32(len(name))}}},
		}
		Expect(k8sClient.Create(ctx, svc)).To(Succeed())
		return svc
	}

	BeforeAll(func() {
		n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "notserved-"}}
		Expect(k8sClient.Create(ctx, n)).To(Succeed())
		ns = n.Name
		startOperator()
		DeferCleanup(func() { stopOperator() })
	})

	It("warns once per Service, not for what is all served or another proxy's", func() {
		nodePortService("web", nil)
		nodePortService("theirs", map[string]string{v1alpha1.ServiceProxyNameLabel: "kube-proxy"})
		Expect(k8sClient.Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "plain"},
			Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}},
		})).To(Succeed())

		expectNotes("web", "Not served: spec.type NodePort's nodePort 30083/TCP. ipvs-operator serves only the ClusterIP (")
		for range 3 {
			touch("web")
		}
		expectNotes("web", "nodePort 30083/TCP")
		Expect(notServed(Default, "theirs")).To(BeEmpty())
		Expect(notServed(Default, "plain")).To(BeEmpty())
	})

	It("warns again when an edit changes what is not served, and forgets a Service once all is served", func() {
		edit("web", func(s *corev1.Service) { s.Spec.ExternalIPs = []string{"198.51.100.7"} })
		expectNotes("web", "nodePort 30083/TCP. ", "nodePort 30083/TCP; spec.externalIPs 198.51.100.7.")

		By("turning it into a plain ClusterIP Service: nothing new")
		edit("web", func(s *corev1.Service) {
			s.Spec.Type, s.Spec.ExternalIPs, s.Spec.Ports[0].NodePort = corev1.ServiceTypeClusterIP, nil, 0
		})
		expectNotes("web", "nodePort 30083/TCP. ", "nodePort 30083/TCP; spec.externalIPs 198.51.100.7.")

		By("adding an external IP back: a new condition")
		edit("web", func(s *corev1.Service) { s.Spec.ExternalIPs = []string{"198.51.100.8"} })
		expectNotes("web", "nodePort 30083/TCP. ", "nodePort 30083/TCP; spec.externalIPs 198.51.100.7.",
			"Not served: spec.externalIPs 198.51.100.8.")
	})

	It("names a load balancer's ingress IPs once they are in status", func() {
		lb := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "lb"},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, AllocateLoadBalancerNodePorts: ptr.To(false),
				Ports: []corev1.ServicePort{{Port: 443}}},
		}
		Expect(k8sClient.Create(ctx, lb)).To(Succeed())
		Consistently(func(g Gomega) { g.Expect(notServed(g, "lb")).To(BeEmpty()) }).WithTimeout(time.Second).Should(Succeed())
		lb.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "203.0.113.7"}}
		Expect(k8sClient.Status().Update(ctx, lb)).To(Succeed())
		expectNotes("lb", "Not served: status.loadBalancer.ingress 203.0.113.7.")
	})

	It("does not repeat a warning after a restart, and warns for what changed while it was down", func() {
		restartOperator()
		touch("web")
		touch("lb")
		expectNotes("web", "nodePort 30083/TCP. ", "nodePort 30083/TCP; spec.externalIPs 198.51.100.7.",
			"Not served: spec.externalIPs 198.51.100.8.")
		expectNotes("lb", "status.loadBalancer.ingress 203.0.113.7.")

		stopOperator()
		edit("web", func(s *corev1.Service) { s.Spec.ExternalIPs = []string{"198.51.100.9"} })
		startOperator()
		expectNotes("web", "nodePort 30083/TCP. ", "nodePort 30083/TCP; spec.externalIPs 198.51.100.7.",
			"Not served: spec.externalIPs 198.51.100.8.", "Not served: spec.externalIPs 198.51.100.9.")
	})

	It("warns a Service deleted and created again under the same name anew", func() {
		Expect(k8sClient.Delete(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "lb"}})).To(Succeed())
		nodePortService("lb", nil)
		expectNotes("lb", "status.loadBalancer.ingress 203.0.113.7.", "Not served: spec.type NodePort's nodePort 30082/TCP.")
	})
})
