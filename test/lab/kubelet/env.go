package kubelet

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// envSource fetches the ConfigMaps and Secrets that env vars refer to.
type envSource interface {
	ConfigMap(ctx context.Context, namespace, name string) (map[string]string, error)
	Secret(ctx context.Context, namespace, name string) (map[string]string, error)
}

// podRuntimeInfo is what the downward API and the kubelet-provided variables need beyond the pod spec.
type podRuntimeInfo struct {
	PodIP, HostIP string
	// PodIPv6 and HostIPv6 are a dual-stack node's second family ("" otherwise): status.podIPs and
	// status.hostIPs list both, comma-separated, as the kubelet's downward API does.
	PodIPv6, HostIPv6 string
	// Allocatable stands in for unset resource limits in resourceFieldRef, as the node's allocatable does.
	Allocatable corev1.ResourceList
	// Base is set first and can be overridden by the pod (PATH, HOSTNAME, KUBERNETES_SERVICE_*, KUBECONFIG).
	Base []corev1.EnvVar
}

// joinNonEmpty joins the non-empty addresses with commas.
func joinNonEmpty(addrs ...string) string {
	return strings.Join(slices.DeleteFunc(addrs, func(a string) bool { return a == "" }), ",")
}

// renderEnv computes a container's environment the way the kubelet does: envFrom, then env (later entries
// win), values with $(VAR) references expanded against what is already defined, downward-API fieldRef and
// resourceFieldRef, and ConfigMap/Secret key references (optional ones may be missing). It returns the
// variables in order, as KEY=VALUE, and the map used to expand command and args.
func renderEnv(ctx context.Context, pod *corev1.Pod, c *corev1.Container, info podRuntimeInfo, src envSource) ([]string, map[string]string, error) {
	vars := map[string]string{}
	var order []string
	set := func(k, v string) {
		if _, seen := vars[k]; !seen {
			order = append(order, k)
		}
		vars[k] = v
	}
	for _, e := range info.Base {
		set(e.Name, e.Value)
	}
	for _, from := range c.EnvFrom {
		var data map[string]string
		var err error
		optional := false
		switch {
		case from.ConfigMapRef != nil:
			optional = from.ConfigMapRef.Optional != nil && *from.ConfigMapRef.Optional
			data, err = src.ConfigMap(ctx, pod.Namespace, from.ConfigMapRef.Name)
		case from.SecretRef != nil:
			optional = from.SecretRef.Optional != nil && *from.SecretRef.Optional
			data, err = src.Secret(ctx, pod.Namespace, from.SecretRef.Name)
		}
		if err != nil {
			if optional {
				continue
			}
			return nil, nil, fmt.Errorf("envFrom: %w", err)
		}
		keys := make([]string, 0, len(data))
		for k := range data {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			set(from.Prefix+k, data[k])
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			set(e.Name, expandVars(e.Value, vars))
			continue
		}
		v, skip, err := envValueFrom(ctx, pod, c, e.ValueFrom, info, src)
		if err != nil {
			return nil, nil, fmt.Errorf("env %s: %w", e.Name, err)
		}
		if !skip {
			set(e.Name, v)
		}
	}
	out := make([]string, 0, len(order))
	for _, k := range order {
		out = append(out, k+"="+vars[k])
	}
	return out, vars, nil
}

// envValueFrom resolves one valueFrom; skip is true for a missing optional key.
func envValueFrom(ctx context.Context, pod *corev1.Pod, c *corev1.Container, from *corev1.EnvVarSource, info podRuntimeInfo, src envSource) (string, bool, error) {
	switch {
	case from.FieldRef != nil:
		v, err := podField(pod, from.FieldRef.FieldPath, info)
		return v, false, err
	case from.ResourceFieldRef != nil:
		v, err := resourceField(c, from.ResourceFieldRef, info.Allocatable)
		return v, false, err
	case from.ConfigMapKeyRef != nil:
		ref := from.ConfigMapKeyRef
		return keyFrom(src.ConfigMap(ctx, pod.Namespace, ref.Name))(ref.Key, ref.Optional, "configmap "+ref.Name)
	case from.SecretKeyRef != nil:
		ref := from.SecretKeyRef
		return keyFrom(src.Secret(ctx, pod.Namespace, ref.Name))(ref.Key, ref.Optional, "secret "+ref.Name)
	}
	return "", false, fmt.Errorf("valueFrom kind is %w", errUnsupported)
}

func keyFrom(data map[string]string, err error) func(key string, optional *bool, what string) (string, bool, error) {
	return func(key string, optional *bool, what string) (string, bool, error) {
		isOptional := optional != nil && *optional
		if err != nil {
			if isOptional {
				return "", true, nil
			}
			return "", false, err
		}
		v, ok := data[key]
		if !ok {
			if isOptional {
				return "", true, nil
			}
			return "", false, fmt.Errorf("%s has no key %q", what, key)
		}
		return v, false, nil
	}
}

// podField is the downward API's fieldRef.
func podField(pod *corev1.Pod, path string, info podRuntimeInfo) (string, error) {
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.podIP":
		return info.PodIP, nil
	case "status.podIPs":
		return joinNonEmpty(info.PodIP, info.PodIPv6), nil
	case "status.hostIP":
		return info.HostIP, nil
	case "status.hostIPs":
		return joinNonEmpty(info.HostIP, info.HostIPv6), nil
	}
	for prefix, m := range map[string]map[string]string{"metadata.labels": pod.Labels, "metadata.annotations": pod.Annotations} {
		if key, ok := strings.CutPrefix(path, prefix+"['"); ok {
			if key, ok = strings.CutSuffix(key, "']"); ok {
				return m[key], nil
			}
		}
	}
	return "", fmt.Errorf("fieldRef %q is %w", path, errUnsupported)
}

// resourceField is the downward API's resourceFieldRef: limits default to the node's allocatable, and the
// value is rounded up in units of the divisor.
func resourceField(c *corev1.Container, ref *corev1.ResourceFieldSelector, allocatable corev1.ResourceList) (string, error) {
	kind, name, ok := strings.Cut(ref.Resource, ".")
	if !ok {
		return "", fmt.Errorf("resourceFieldRef %q is %w", ref.Resource, errUnsupported)
	}
	rn := corev1.ResourceName(name)
	var q resource.Quantity
	var found bool
	switch kind {
	case "limits":
		q, found = c.Resources.Limits[rn]
		if !found {
			q, found = allocatable[rn]
		}
	case "requests":
		q, found = c.Resources.Requests[rn]
	default:
		return "", fmt.Errorf("resourceFieldRef %q is %w", ref.Resource, errUnsupported)
	}
	if !found {
		return "0", nil
	}
	divisor := ref.Divisor
	if divisor.IsZero() {
		divisor = resource.MustParse("1")
	}
	if rn == corev1.ResourceCPU {
		return fmt.Sprint(int64(math.Ceil(float64(q.MilliValue()) / float64(divisor.MilliValue())))), nil
	}
	return fmt.Sprint(int64(math.Ceil(float64(q.Value()) / float64(divisor.Value())))), nil
}

// expandVars replaces $(VAR) by its value when VAR is defined and $$ by $, leaving unknown references as they
// are (the kubelet's expansion rules).
func expandVars(s string, vars map[string]string) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := vars[name]; ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}
