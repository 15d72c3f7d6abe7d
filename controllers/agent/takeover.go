package agent

import (
	"context"
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/ipvs-operator/ipvs-operator/controllers/agent/desired"
	"github.com/ipvs-operator/ipvs-operator/ipvs/takeover"
)

// Takeover is the takeover of a node that kube-proxy programmed in IPVS mode (--takeover-kube-proxy-ipvs;
// *takeover.Takeover): Adopt runs before the engine first reads the kernel, RemoveLeftovers once the agent
// programs every Service.
type Takeover interface {
	Adopt(ctx context.Context, serve sets.Set[netip.Addr]) ([]takeover.Step, error)
	RemoveLeftovers(ctx context.Context) ([]takeover.Step, error)
}

// metricTakeoverLeftovers is what an operator alerts on: kube-proxy's leftovers that stay after a takeover
// (their removal keeps failing) are harmless to traffic the agent owns, but kube-ipvs0 still holds
// ClusterIPs and the KUBE-* rules still match packets.
var metricTakeoverLeftovers = prometheus.NewGauge(prometheus.GaugeOpts{
	Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: "takeover_leftovers",
	Help: "1 while a takeover from kube-proxy's IPVS mode (--takeover-kube-proxy-ipvs) has not yet removed " +
		"kube-proxy's leftovers (kube-ipvs0, its KUBE-* chains and ipsets); 0 once removed, and without a takeover.",
})

// takeoverAdopt binds on the agent's device the ClusterIPs kube-proxy holds for the Services the agent serves,
// so that the engine's Adopt finds kube-proxy's virtual servers on its own VIPs and edits them in place.
func (s *Startup) takeoverAdopt(ctx context.Context) error {
	log := logf.FromContext(ctx).WithName("takeover")
	list := &corev1.ServiceList{}
	if err := s.Client.List(ctx, list); err != nil {
		return err
	}
	serve := sets.New[netip.Addr]()
	for i := range list.Items {
		serve.Insert(desired.ServedClusterIPs(&list.Items[i], s.Services.Options.ManageAll)...)
	}
	metricTakeoverLeftovers.Set(1)
	steps, err := s.Takeover.Adopt(ctx, serve)
	log.Info("Adopted kube-proxy's ClusterIPs", "bound", len(steps), "served", serve.Len())
	for _, st := range steps {
		log.V(1).Info("Takeover step", "step", st.String())
	}
	return err
}

// takeoverLeftovers removes kube-proxy's leftovers once; until it succeeds it is tried again after each audit.
func (s *Startup) takeoverLeftovers(ctx context.Context) {
	if s.Takeover == nil || s.leftoversGone.Load() {
		return
	}
	log := logf.FromContext(ctx).WithName("takeover")
	steps, err := s.Takeover.RemoveLeftovers(ctx)
	for _, st := range steps {
		log.Info("Removed kube-proxy's leftover", "step", st.String())
	}
	if err != nil {
		log.Error(err, "Removing kube-proxy's leftovers failed; retrying after the next audit")
		s.leftoversEvent(err)
		return
	}
	s.leftoversGone.Store(true)
	metricTakeoverLeftovers.Set(0)
	log.Info("Takeover from kube-proxy done", "removed", len(steps))
}

// leftoversEvent puts a failed removal on the Node, where `kubectl describe node` shows it; the recorder folds
// the repeats of each audit into one series.
func (s *Startup) leftoversEvent(err error) {
	if s.Services == nil || s.Services.Recorder == nil || s.Services.Options.NodeName == "" {
		return
	}
	// As kube-proxy refers to its Node in its Events: by name, with the name as UID.
	node := s.Services.Options.NodeName
	ref := &corev1.ObjectReference{Kind: "Node", Name: node, UID: types.UID(node)}
	s.Services.Recorder.Eventf(ref, nil, corev1.EventTypeWarning, "TakeoverLeftoversFailed", "RemoveLeftovers",
		"Removing kube-proxy's leftovers after the takeover failed (retried after each audit): %v", err)
}
