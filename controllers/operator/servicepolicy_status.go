package operator

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ipvs-operator/ipvs-operator/api/policy"
	"github.com/ipvs-operator/ipvs-operator/api/v1alpha1"
)

// maxNamesInMessage bounds how many Service names a condition message or an event note lists (an event's note
// is limited to 1 kB).
const maxNamesInMessage = 10

// desiredStatus returns the status a policy should have given its resolution. It starts from the policy's
// current status so that meta.SetStatusCondition keeps the lastTransitionTime of conditions whose status did
// not change; comparing the result with the current status tells whether a write is needed.
func desiredStatus(p *v1alpha1.ServicePolicy, r policy.PolicyResult) v1alpha1.ServicePolicyStatus {
	status := *p.Status.DeepCopy()
	status.ObservedGeneration = p.Generation
	if r.Invalid == nil {
		// An invalid policy keeps its list: the agents keep its last valid settings for those Services
		// until it is fixed or deleted, so they are still what it governs.
		status.Services = nil
		if len(r.Applied) > 0 {
			status.Services = append([]string(nil), r.Applied...)
		}
	}
	status.ServiceCount = int32(len(status.Services))

	ready := metav1.Condition{Type: v1alpha1.ConditionReady, ObservedGeneration: p.Generation}
	switch {
	case r.Invalid != nil:
		ready.Status, ready.Reason = metav1.ConditionFalse, v1alpha1.ReasonInvalidSelector
		if errors.Is(r.Invalid, policy.ErrInvalidSpec) {
			ready.Reason = v1alpha1.ReasonInvalidSpec
		}
		ready.Message = fmt.Sprintf("The policy is invalid (%v). It selects no new Service; the Services it "+
			"governed keep its last valid settings until it is fixed or deleted", r.Invalid)
	case len(r.Applied) > 0:
		ready.Status, ready.Reason = metav1.ConditionTrue, v1alpha1.ReasonApplied
		ready.Message = fmt.Sprintf("Applies to %s", countServices(len(r.Applied)))
	case len(r.Lost) > 0:
		ready.Status, ready.Reason = metav1.ConditionFalse, v1alpha1.ReasonConflict
		ready.Message = fmt.Sprintf("Every Service it selects (%d) is governed by an older policy", len(r.Lost))
	default:
		ready.Status, ready.Reason = metav1.ConditionFalse, v1alpha1.ReasonNoServices
		ready.Message = fmt.Sprintf("The selector matches no Service in namespace %s", p.Namespace)
	}
	meta.SetStatusCondition(&status.Conditions, ready)

	conflicted := metav1.Condition{Type: v1alpha1.ConditionConflicted, ObservedGeneration: p.Generation}
	if len(r.Lost) > 0 {
		conflicted.Status, conflicted.Reason = metav1.ConditionTrue, v1alpha1.ReasonConflict
		conflicted.Message = conflictMessage(r.Lost)
	} else {
		conflicted.Status, conflicted.Reason = metav1.ConditionFalse, v1alpha1.ReasonNoConflict
		conflicted.Message = "No older policy governs a Service this policy selects"
	}
	meta.SetStatusCondition(&status.Conditions, conflicted)
	return status
}

// conflictMessage names the lost Services and who governs them, one clause per winning policy, e.g.
// `services api, web are governed by older policy "a"; service db is governed by older policy "b"`.
func conflictMessage(lost []policy.LostService) string {
	byWinner := map[string][]string{}
	for _, l := range lost {
		byWinner[l.Winner] = append(byWinner[l.Winner], l.Service)
	}
	winners := make([]string, 0, len(byWinner))
	for w := range byWinner {
		winners = append(winners, w)
	}
	sort.Strings(winners)
	clauses := make([]string, 0, len(winners))
	for _, w := range winners {
		services := byWinner[w]
		sort.Strings(services)
		if len(services) == 1 {
			clauses = append(clauses, fmt.Sprintf("service %s is governed by older policy %q", services[0], w))
		} else {
			clauses = append(clauses, fmt.Sprintf("services %s are governed by older policy %q", listNames(services), w))
		}
	}
	return strings.Join(clauses, "; ")
}

// listNames joins names with ", ", listing at most maxNamesInMessage of them.
func listNames(names []string) string {
	if len(names) <= maxNamesInMessage {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:maxNamesInMessage], ", "), len(names)-maxNamesInMessage)
}

func countServices(n int) string {
	if n == 1 {
		return "1 Service"
	}
	return fmt.Sprintf("%d Services", n)
}
