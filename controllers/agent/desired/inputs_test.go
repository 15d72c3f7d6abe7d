package desired

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// TestInputsChanged: every edit of a live Service that changes its translation must pass the filter (the
// Service watch once dropped them all, keyed on metadata.generation, which Services never bump), and updates
// that cannot change it must not.
func TestInputsChanged(t *testing.T) {
	slices := []*discoveryv1.EndpointSlice{v4("web-1", ep("10.244.1.5", onThisNode))}
	for _, tc := range []struct {
		name string
		edit func(*corev1.Service)
		// matters: the edit changes ForService's result, so missing it would leave the kernel stale.
		matters, changed bool
	}{
		{"port number", func(s *corev1.Service) { s.Spec.Ports[0].Port = 81 }, true, true},
		{"protocol", func(s *corev1.Service) { s.Spec.Ports[0].Protocol = corev1.ProtocolUDP }, true, true},
		{"a second port", func(s *corev1.Service) {
			s.Spec.Ports = append(s.Spec.Ports, sport("dns", 53, corev1.ProtocolUDP))
		}, true, true},
		{"sessionAffinity ClientIP", func(s *corev1.Service) { s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP }, true, true},
		{"sessionAffinity timeout", func(s *corev1.Service) {
			s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
			s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr.To[int32](60)}}
		}, true, true},
		{"internalTrafficPolicy Local", func(s *corev1.Service) {
			s.Spec.InternalTrafficPolicy = ptr.To(corev1.ServiceInternalTrafficPolicyLocal)
		}, false, true}, // the test slice's endpoint is on this node: same real servers, still an input
		{"type ExternalName", func(s *corev1.Service) {
			s.Spec.Type, s.Spec.ClusterIP, s.Spec.ClusterIPs = corev1.ServiceTypeExternalName, "", nil
			s.Spec.ExternalName = "example.invalid"
		}, true, true},
		{"dual-stack upgrade", func(s *corev1.Service) {
			s.Spec.ClusterIPs = append(s.Spec.ClusterIPs, "fd00::10")
		}, true, true},
		{"proxy-name label removed", func(s *corev1.Service) { s.Labels = map[string]string{} }, true, true},
		{"a label policies select on", func(s *corev1.Service) { s.Labels["tier"] = "gold" }, false, true},
		{"status", func(s *corev1.Service) {
			s.Status.Conditions = []metav1.Condition{{Type: "X", Status: metav1.ConditionTrue}}
		}, false, false},
		{"annotation", func(s *corev1.Service) { s.Annotations = map[string]string{"a": "b"} }, false, false},
		{"resourceVersion", func(s *corev1.Service) { s.ResourceVersion = "42" }, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			oldSvc := service()
			newSvc := oldSvc.DeepCopy()
			tc.edit(newSvc)
			if got := InputsChanged(oldSvc, newSvc); got != tc.changed {
				t.Errorf("InputsChanged = %v, want %v", got, tc.changed)
			}
			before, err1 := ForService(oldSvc, slices, nil, Options{NodeName: thisNode})
			after, err2 := ForService(newSvc, slices, nil, Options{NodeName: thisNode})
			if err1 != nil || err2 != nil {
				t.Fatalf("ForService: %v, %v", err1, err2)
			}
			if matters := format(before) != format(after); matters != tc.matters {
				t.Errorf("the edit changes the translation: %v, want %v (before %+v, after %+v)", matters, tc.matters, before, after)
			}
		})
	}
	if !InputsChanged(nil, service()) || InputsChanged(nil, nil) {
		t.Error("InputsChanged with a nil side must report a change exactly when the other side exists")
	}
}
