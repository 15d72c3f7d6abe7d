package kubelet

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
)

func TestConfigMapFiles(t *testing.T) {
	data := map[string]string{"Corefile": ".:53 {}", "other": "x"}
	ref := corev1.LocalObjectReference{Name: "coredns"}
	cases := []struct {
		name    string
		src     corev1.ConfigMapVolumeSource
		want    map[string]string
		wantErr bool
	}{
		{"every key", corev1.ConfigMapVolumeSource{LocalObjectReference: ref}, data, false},
		{"items under their paths", corev1.ConfigMapVolumeSource{LocalObjectReference: ref,
			Items: []corev1.KeyToPath{{Key: "Corefile", Path: "conf/Corefile"}}}, map[string]string{"conf/Corefile": ".:53 {}"}, false},
		{"missing key", corev1.ConfigMapVolumeSource{LocalObjectReference: ref,
			Items: []corev1.KeyToPath{{Key: "nope", Path: "nope"}}}, nil, true},
		{"missing optional key", corev1.ConfigMapVolumeSource{LocalObjectReference: ref, Optional: ptr.To(true),
			Items: []corev1.KeyToPath{{Key: "nope", Path: "nope"}}}, map[string]string{}, false},
		{"path escaping the volume", corev1.ConfigMapVolumeSource{LocalObjectReference: ref,
			Items: []corev1.KeyToPath{{Key: "other", Path: "../x"}}}, nil, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := configMapFiles(&tc.src, data)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if !tc.wantErr && !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestContainerMountsConfigMap(t *testing.T) {
	pod := &corev1.Pod{Spec: corev1.PodSpec{Volumes: []corev1.Volume{{Name: "config-volume",
		VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "coredns"}}}}}}}
	c := &corev1.Container{VolumeMounts: []corev1.VolumeMount{{Name: "config-volume", MountPath: "/etc/coredns"}}}
	binds, skipped := containerMounts(pod, c, "/run/pod", nil)
	want := []bindMount{{Source: "/run/pod/volumes/config-volume", Target: "/etc/coredns", ReadOnly: true}}
	if !reflect.DeepEqual(binds, want) || len(skipped) > 0 {
		t.Errorf("binds %v skipped %v, want %v", binds, skipped, want)
	}
}
