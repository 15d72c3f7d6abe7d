package lab

import (
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/ipvs-operator/ipvs-operator/test/lab/topology"
)

func TestClusterDNSManifests(t *testing.T) {
	objs, err := ClusterDNSManifests()
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]bool{}
	for _, o := range objs {
		kinds[o.GetKind()] = true
		switch o.GetKind() {
		case "Service":
			var s corev1.Service
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &s); err != nil {
				t.Fatal(err)
			}
			if s.Namespace != ClusterDNSNamespace || s.Name != ClusterDNSService || s.Spec.ClusterIP != topology.ClusterDNSIP {
				t.Errorf("Service %s/%s at %s", s.Namespace, s.Name, s.Spec.ClusterIP)
			}
		case "Deployment":
			var d appsv1.Deployment
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &d); err != nil {
				t.Fatal(err)
			}
			c := d.Spec.Template.Spec.Containers[0]
			// The lab kubelet runs GuestBin/<basename of command[0]> for an image its image-map matches.
			if c.Image != CoreDNSImage || len(c.Command) != 1 || c.Command[0] != "/coredns" {
				t.Errorf("container %s: image %s command %v", c.Name, c.Image, c.Command)
			}
			match, _, _ := strings.Cut(coreDNSImageMap, "=")
			if !strings.Contains(c.Image, match) {
				t.Errorf("image %s is not matched by the image map %q", c.Image, coreDNSImageMap)
			}
		}
	}
	for _, k := range []string{"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment", "Service"} {
		if !kinds[k] {
			t.Errorf("no %s", k)
		}
	}
	o := Options{RepoRoot: "/nonexistent"}
	if err := o.defaults(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(o.ImageMap, coreDNSImageMap) {
		t.Errorf("default image map %q lacks %q", o.ImageMap, coreDNSImageMap)
	}
}
