package agent_test

import (
	"context"
	"fmt"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ipvs-operator/ipvs-operator/controllers/agent"
	"github.com/ipvs-operator/ipvs-operator/controllers/agent/desired"
	"github.com/ipvs-operator/ipvs-operator/ipvs/fake"
	"github.com/ipvs-operator/ipvs-operator/ipvs/syncer"
)

// countingEngine counts the syncs of each Service.
type countingEngine struct {
	agent.Engine
	mu    sync.Mutex
	syncs map[string]int
}

func (e *countingEngine) SyncService(ctx context.Context, key string, state desired.State) (syncer.Result, error) {
	e.mu.Lock()
	e.syncs[key]++
	e.mu.Unlock()
	return e.Engine.SyncService(ctx, key, state)
}

func (e *countingEngine) count(key string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.syncs[key]
}

var _ = Describe("an agent starting on existing Services", func() {
	It("syncs each once, in the start-up pass, and still follows what changes after it", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		const n = 8
		for i := range n {
			name := fmt.Sprintf("svc-%d", i)
			Expect(k8s.Create(ctx, service(ns, name, true, corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}))).To(Succeed())
			Expect(k8s.Create(ctx, slice(ns, name, 8080, map[string]bool{fmt.Sprintf("10.244.9.%d", i+1): true}))).To(Succeed())
		}
		eng := &countingEngine{syncs: map[string]int{},
			Engine: syncer.New(fake.New(), fake.NewVIPs(), fake.NewRules(), clock.RealClock{}, syncer.Options{})}
		a := startAgent(ctx, agentConfig{rest: cfg, scheme: k8s.Scheme(), engine: eng})
		DeferCleanup(a.stop)
		Eventually(ctx, func() error { return a.startup.ReadyCheck(nil) }).WithTimeout(20 * time.Second).Should(Succeed())

		// A change after the pass: the Service's own reconcile programs it.
		changed := client.ObjectKey{Namespace: ns, Name: "svc-0"}
		es := slice(ns, "svc-0", 8080, map[string]bool{"10.244.9.1": false})
		Expect(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: es.Name}, es)).To(Succeed())
		es.Endpoints[0].Conditions.Ready = new(bool)
		es.Endpoints[0].Conditions.Serving = new(bool)
		Expect(k8s.Update(ctx, es)).To(Succeed())
		Eventually(ctx, func() int { return eng.count(changed.String()) }).WithTimeout(10 * time.Second).Should(Equal(2))

		// The informers queued a reconcile for every Service; those of the unchanged ones find nothing new
		// and return without a sync (before skipUnchanged, each was synced a second time right here).
		Consistently(ctx, func() []int {
			var counts []int
			for i := 1; i < n; i++ {
				counts = append(counts, eng.count(fmt.Sprintf("%s/svc-%d", ns, i)))
			}
			return counts
		}).WithTimeout(2 * time.Second).Should(HaveEach(1))
	})
})
