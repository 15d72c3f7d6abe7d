package dataplane

import (
	"context"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ipvs-operator/ipvs-operator/test/install"
)

// notServedReason is controllers/operator.EventReasonNotServed.
const notServedReason = "NotServed"

// operatorPods selects the operator's pods (config/manager; the CSV keeps the labels).
var operatorPods = client.MatchingLabels{"control-plane": "controller-manager", "app.kubernetes.io/name": "ipvs-operator"}

// expectNotServedOnce proves, with the operator as installed (its RBAC from config/, not an admin's), that a
// NodePort Service the agents serve gets one NotServed Warning from the operator naming its node port, and
// that restarting the operator does not repeat it: the new leader reads the stored event back.
func expectNotServedOnce(ctx context.Context, drv Driver, ns string) {
	GinkgoHelper()
	nodePort := func(name string) *corev1.Service {
		return newService(ctx, drv, ns, name, nil, func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeNodePort },
			svcPort("http", 80, intstr.FromInt32(8080), corev1.ProtocolTCP))
	}
	np := nodePort("np")
	expectOneNotServed(ctx, drv, np)

	By("restarting the operator")
	var pods corev1.PodList
	Expect(drv.Client().List(ctx, &pods, client.InNamespace(install.Namespace), operatorPods)).To(Succeed())
	Expect(pods.Items).NotTo(BeEmpty(), "no operator pod")
	old := map[types.UID]bool{}
	for i := range pods.Items {
		old[pods.Items[i].UID] = true
		Expect(client.IgnoreNotFound(drv.Client().Delete(ctx, &pods.Items[i]))).To(Succeed())
	}
	Eventually(ctx, func(g Gomega) {
		g.Expect(drv.Client().List(ctx, &pods, client.InNamespace(install.Namespace), operatorPods)).To(Succeed())
		fresh := false
		for i := range pods.Items {
			g.Expect(old[pods.Items[i].UID] && pods.Items[i].DeletionTimestamp == nil).To(BeFalse(), "an old operator pod remains")
			fresh = fresh || (!old[pods.Items[i].UID] && podReady(&pods.Items[i]))
		}
		g.Expect(fresh).To(BeTrue(), "a new Ready operator pod")
	}).WithTimeout(2 * time.Minute).WithPolling(500 * time.Millisecond).Should(Succeed())

	// A Service made after the restart is warned only once the new operator leads and has gone through the
	// Services it found at start, np among them.
	expectOneNotServed(ctx, drv, nodePort("np2"))
	Consistently(ctx, func(g Gomega) {
		g.Expect(notServedEvents(ctx, g, drv, np)).To(HaveLen(1), "the restarted operator repeated the warning")
	}).WithTimeout(3 * time.Second).WithPolling(500 * time.Millisecond).Should(Succeed())
}

// expectOneNotServed waits for the NotServed event on svc, naming its node port.
func expectOneNotServed(ctx context.Context, drv Driver, svc *corev1.Service) {
	GinkgoHelper()
	port := svc.Spec.Ports[0].NodePort
	Expect(port).NotTo(BeZero(), "the API server allocates a node port")
	Eventually(ctx, func(g Gomega) {
		events := notServedEvents(ctx, g, drv, svc)
		g.Expect(events).To(HaveLen(1))
		e := events[0]
		g.Expect(e.Type).To(Equal(corev1.EventTypeWarning))
		g.Expect(e.Note).To(ContainSubstring("spec.type NodePort's nodePort %d/TCP", port))
		g.Expect(e.Note).To(ContainSubstring("serves only the ClusterIP (%s port 80/TCP)", svc.Spec.ClusterIP))
	}).WithTimeout(time.Minute).WithPolling(500 * time.Millisecond).Should(Succeed())
}

// notServedEvents returns the NotServed events on svc (this very Service, by UID); a repeat recorded as a
// series counts as a second event.
func notServedEvents(ctx context.Context, g Gomega, drv Driver, svc *corev1.Service) []eventsv1.Event {
	var list eventsv1.EventList
	g.Expect(drv.Client().List(ctx, &list, client.InNamespace(svc.Namespace))).To(Succeed())
	var out []eventsv1.Event
	for _, e := range list.Items {
		if e.Regarding.UID == svc.UID && e.Reason == notServedReason {
			out = append(out, e)
			if e.Series != nil {
				out = append(out, e)
			}
		}
	}
	return out
}
