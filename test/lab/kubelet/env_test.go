package kubelet

import (
	"context"
	"errors"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

type mapEnvSource struct {
	configMaps, secrets map[string]map[string]string
}

var errMissing = errors.New("not found")

func (s mapEnvSource) ConfigMap(_ context.Context, _, name string) (map[string]string, error) {
	if d, ok := s.configMaps[name]; ok {
		return d, nil
	}
	return nil, errMissing
}

func (s mapEnvSource) Secret(_ context.Context, _, name string) (map[string]string, error) {
	if d, ok := s.secrets[name]; ok {
		return d, nil
	}
	return nil, errMissing
}

func TestRenderEnv(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "agent-x", Namespace: "ipvs-system", UID: "uid-1",
			Labels: map[string]string{"app": "agent"}},
		Spec: corev1.PodSpec{NodeName: "node-a", ServiceAccountName: "agent"},
	}
	src := mapEnvSource{
		configMaps: map[string]map[string]string{"cfg": {"LEVEL": "debug", "MODE": "lab"}},
		secrets:    map[string]map[string]string{"sec": {"token": "s3cret"}},
	}
	info := podRuntimeInfo{PodIP: "10.244.1.5", HostIP: "192.168.100.11", PodIPv6: "fd00:10:244:1::5",
		Allocatable: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2"), corev1.ResourceMemory: resource.MustParse("2Gi")},
		Base:        []corev1.EnvVar{{Name: "PATH", Value: "/bin"}, {Name: "HOSTNAME", Value: "agent-x"}}}
	field := func(p string) *corev1.EnvVarSource {
		return &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: p}}
	}
	cases := []struct {
		name    string
		c       corev1.Container
		want    []string
		wantErr bool
	}{
		{"downward API", corev1.Container{Env: []corev1.EnvVar{
			{Name: "POD_NAME", ValueFrom: field("metadata.name")},
			{Name: "POD_NAMESPACE", ValueFrom: field("metadata.namespace")},
			{Name: "NODE_NAME", ValueFrom: field("spec.nodeName")},
			{Name: "POD_IP", ValueFrom: field("status.podIP")},
			{Name: "HOST_IP", ValueFrom: field("status.hostIP")},
			{Name: "APP", ValueFrom: field("metadata.labels['app']")},
			{Name: "POD_IPS", ValueFrom: field("status.podIPs")},
			{Name: "HOST_IPS", ValueFrom: field("status.hostIPs")},
		}}, []string{"PATH=/bin", "HOSTNAME=agent-x", "POD_NAME=agent-x", "POD_NAMESPACE=ipvs-system", "NODE_NAME=node-a",
			"POD_IP=10.244.1.5", "HOST_IP=192.168.100.11", "APP=agent", "POD_IPS=10.244.1.5,fd00:10:244:1::5", "HOST_IPS=192.168.100.11"}, false},
		{"values expand earlier vars and override base", corev1.Container{Env: []corev1.EnvVar{
			{Name: "NODE", ValueFrom: field("spec.nodeName")},
			{Name: "ADDR", Value: "$(NODE):8080 $(UNKNOWN) $$(NODE)"},
			{Name: "PATH", Value: "/usr/bin:$(PATH)"},
		}}, []string{"PATH=/usr/bin:/bin", "HOSTNAME=agent-x", "NODE=node-a", "ADDR=node-a:8080 $(UNKNOWN) $(NODE)"}, false},
		{"configmap and secret keys", corev1.Container{Env: []corev1.EnvVar{
			{Name: "LEVEL", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Key: "LEVEL"}}},
			{Name: "TOKEN", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: "sec"}, Key: "token"}}},
			{Name: "OPT", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: "missing"}, Key: "k", Optional: ptr.To(true)}}},
		}}, []string{"PATH=/bin", "HOSTNAME=agent-x", "LEVEL=debug", "TOKEN=s3cret"}, false},
		{"missing required key", corev1.Container{Env: []corev1.EnvVar{
			{Name: "X", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Key: "NOPE"}}},
		}}, nil, true},
		{"envFrom with prefix, env wins", corev1.Container{
			EnvFrom: []corev1.EnvFromSource{{Prefix: "CFG_", ConfigMapRef: &corev1.ConfigMapEnvSource{
				LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}},
			Env: []corev1.EnvVar{{Name: "CFG_MODE", Value: "override"}},
		}, []string{"PATH=/bin", "HOSTNAME=agent-x", "CFG_LEVEL=debug", "CFG_MODE=override"}, false},
		{"resource limits default to allocatable", corev1.Container{
			Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")}},
			Env: []corev1.EnvVar{
				{Name: "MEM_MI", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{
					Resource: "limits.memory", Divisor: resource.MustParse("1Mi")}}},
				{Name: "CPUS", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.cpu"}}},
			}}, []string{"PATH=/bin", "HOSTNAME=agent-x", "MEM_MI=128", "CPUS=2"}, false},
	}
	for _, c := range cases {
		got, _, err := renderEnv(context.Background(), pod, &c.c, info, src)
		if (err != nil) != c.wantErr {
			t.Errorf("%s: err = %v", c.name, err)
			continue
		}
		if !c.wantErr && !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s:\n got %q\nwant %q", c.name, got, c.want)
		}
	}
}

func TestExpandVars(t *testing.T) {
	vars := map[string]string{"A": "1", "B": "two"}
	cases := map[string]string{
		"plain":       "plain",
		"$(A)":        "1",
		"x$(A)y$(B)z": "x1ytwoz",
		"$(C)":        "$(C)",
		"$$(A)":       "$(A)",
		"$A":          "$A",
		"$(A":         "$(A",
		"cost $":      "cost $",
	}
	for in, want := range cases {
		if got := expandVars(in, vars); got != want {
			t.Errorf("expandVars(%q) = %q, want %q", in, got, want)
		}
	}
}
