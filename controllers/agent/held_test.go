package agent

import (
	"errors"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
)

func TestHeldServices(t *testing.T) {
	clk := clocktesting.NewFakePassiveClock(time.Unix(1000, 0))
	h := newHeldServices(clk)
	web, bad := types.NamespacedName{Namespace: "shop", Name: "web"}, types.NamespacedName{Namespace: "shop", Name: "bad"}
	boom := errors.New("connection refused")

	if !h.hold(web, HeldDependencyError, boom) {
		t.Fatal("a new hold must ask for an Event")
	}
	if h.hold(web, HeldDependencyError, boom) {
		t.Fatal("the same reason again must not send another Event")
	}
	if !h.hold(bad, HeldInvalidService, errors.New("port 0")) {
		t.Fatal("another Service's hold is new")
	}
	if err := h.check(time.Minute); err != nil {
		t.Fatalf("held for less than the bound: %v", err)
	}
	clk.SetTime(clk.Now().Add(2 * time.Minute))
	err := h.check(time.Minute)
	if !errors.Is(err, boom) {
		t.Fatalf("check = %v, want it to wrap the dependency error", err)
	}
	if want := "1 Services held for over 1m0s because their objects cannot be read (first: shop/web)"; err.Error()[:len(want)] != want {
		t.Fatalf("check = %q", err)
	}
	h.release(web)
	if err := h.check(time.Minute); err != nil {
		t.Fatalf("an invalid Service must not make the agent unready: %v", err)
	}
	if !h.hold(web, HeldDependencyError, boom) {
		t.Fatal("a hold after a release is new again")
	}
	if err := h.check(time.Minute); err != nil {
		t.Fatalf("the clock restarts with a new hold: %v", err)
	}
}
