package agent

import (
	"context"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
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
		return
	}
	s.leftoversGone.Store(true)
	log.Info("Takeover from kube-proxy done", "removed", len(steps))
}
