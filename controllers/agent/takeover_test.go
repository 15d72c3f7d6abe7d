package agent

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/client-go/tools/events"

	"github.com/ipvs-operator/ipvs-operator/controllers/agent/desired"
	"github.com/ipvs-operator/ipvs-operator/ipvs/takeover"
)

// failingLeftovers refuses the removal of kube-proxy's leftovers while fail is set.
type failingLeftovers struct{ fail error }

func (failingLeftovers) Adopt(context.Context, sets.Set[netip.Addr]) ([]takeover.Step, error) {
	return nil, nil
}

func (f *failingLeftovers) RemoveLeftovers(context.Context) ([]takeover.Step, error) {
	return nil, f.fail
}

// A removal that fails is visible to whoever runs the node (a Warning Event on the Node, the gauge at 1) and is
// tried again; once it succeeds the gauge goes to 0 and no further attempt is made.
func TestTakeoverLeftoversFailureIsVisible(t *testing.T) {
	refused := errors.New("kube-ipvs0: operation not permitted")
	tk := &failingLeftovers{fail: refused}
	rec := events.NewFakeRecorder(10)
	s := &Startup{StartupConfig: StartupConfig{Takeover: tk,
		Services: &ServiceReconciler{Recorder: rec, Options: desired.Options{NodeName: "node-a"}}}}
	metricTakeoverLeftovers.Set(1) // as takeoverAdopt leaves it

	s.takeoverLeftovers(context.Background())
	s.takeoverLeftovers(context.Background())
	got := drain(rec)
	if len(got) != 2 || !strings.Contains(got[0], "Warning TakeoverLeftoversFailed") || !strings.Contains(got[0], refused.Error()) {
		t.Errorf("events after two failed removals = %q, want two Warning TakeoverLeftoversFailed naming %q", got, refused)
	}
	if v := gauge(t, metricTakeoverLeftovers); v != 1 {
		t.Errorf("takeover_leftovers = %v while the removal fails, want 1", v)
	}

	tk.fail = nil
	s.takeoverLeftovers(context.Background())
	if v := gauge(t, metricTakeoverLeftovers); v != 0 {
		t.Errorf("takeover_leftovers = %v after the removal succeeded, want 0", v)
	}
	tk.fail = refused // a later audit must not try again
	s.takeoverLeftovers(context.Background())
	if got := drain(rec); len(got) != 0 {
		t.Errorf("events after the removal succeeded = %q, want none", got)
	}
}
