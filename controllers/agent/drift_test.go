package agent_test

import (
	"fmt"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
)

// driftDetections reads ipvs_operator_agent_drift_detections_total{reason} from the agent's registry.
func driftDetections(reason string) float64 {
	mfs, err := metrics.Registry.Gather()
	Expect(err).NotTo(HaveOccurred())
	for _, mf := range mfs {
		if mf.GetName() != "ipvs_operator_agent_drift_detections_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

var _ = Describe("the drift canary", func() {
	It("notices a flushed IPVS table and re-programs it at once", func(ctx SpecContext) {
		Eventually(ctx, func() error { return startup.ReadyCheck(nil) }).WithTimeout(20 * time.Second).Should(Succeed())
		ns := newNamespace(ctx)
		svc := service(ns, "flushed", true, corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromString("http")})
		Expect(k8s.Create(ctx, svc)).To(Succeed())
		Expect(k8s.Create(ctx, slice(ns, "flushed", 8080, map[string]bool{"10.244.1.20": true}))).To(Succeed())
		programmed := strings.Join([]string{
			fmt.Sprintf("-A -t %s:80 -s rr", svc.Spec.ClusterIP),
			fmt.Sprintf("-a -t %s:80 -r 10.244.1.20:8080 -m -w 1", svc.Spec.ClusterIP),
		}, "\n")
		eventuallyTable(ctx, ContainSubstring(programmed))

		By("flushing IPVS as kube-proxy's start-up cleanup (or ipvsadm -C) does")
		// The 1 s audit may repair a flush before the 100 ms canary sees it: flush again until the canary
		// has been the one to notice.
		before := driftDetections("ipvs")
		foreign := ipvs.Service{ServiceKey: key("198.51.100.7", 80, ipvs.TCP), Scheduler: "wlc"}
		Eventually(ctx, func() float64 {
			if n := driftDetections("ipvs"); n > before || !strings.Contains(table(), programmed) {
				return n
			}
			kernel.Flush()
			Expect(kernel.AddService(foreign)).To(Succeed()) // the admin's own, which the flush also took
			return driftDetections("ipvs")
		}).WithTimeout(20 * time.Second).WithPolling(50 * time.Millisecond).Should(BeNumerically(">", before))
		eventuallyTable(ctx, ContainSubstring(programmed))
	})
})
