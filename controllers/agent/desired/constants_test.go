package desired

import (
	"testing"
	"time"

	"github.com/ipvs-operator/ipvs-operator/api/v1alpha1"
)

// The package mirrors a few API constants instead of importing the CRD package; keep them equal.
func TestConstantsMirrorTheAPI(t *testing.T) {
	if ProxyNameLabel != v1alpha1.ServiceProxyNameLabel || ProxyName != v1alpha1.ServiceProxyName {
		t.Errorf("scope label %s=%s, API says %s=%s", ProxyNameLabel, ProxyName, v1alpha1.ServiceProxyNameLabel, v1alpha1.ServiceProxyName)
	}
	if DefaultScheduler != string(v1alpha1.DefaultScheduler) {
		t.Errorf("DefaultScheduler %q, API says %q", DefaultScheduler, v1alpha1.DefaultScheduler)
	}
	if DefaultDrainTimeout != time.Duration(v1alpha1.DefaultDrainTimeoutSeconds)*time.Second {
		t.Errorf("DefaultDrainTimeout %v, API says %ds", DefaultDrainTimeout, v1alpha1.DefaultDrainTimeoutSeconds)
	}
}
