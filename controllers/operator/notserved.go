package operator

import (
	"fmt"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/ipvs-operator/ipvs-operator/api/v1alpha1"
)

// maxNoteValues bounds how many values of one field a NotServed note lists: an event's note is at most 1 kB.
const maxNoteValues = 4

// inScope reports whether the agents serve svc's ClusterIP under the scope manageAll says: every Service
// not labelled for another proxy (scope all), or only those labelled for ipvs-operator (scope labelled).
// It is controllers/agent/desired.InScope, which the operator cannot import without linking the agent's
// kernel code; a test holds the two equal.
func inScope(svc *corev1.Service, manageAll bool) bool {
	name, labelled := svc.Labels[v1alpha1.ServiceProxyNameLabel]
	if manageAll {
		return !labelled || name == v1alpha1.ServiceProxyName
	}
	return labelled && name == v1alpha1.ServiceProxyName
}

// NotServed lists the parts of svc that the agents do not serve although they serve its ClusterIP, each as
// "<field> <values>", in a fixed order; nil when there are none or when the agents do not serve svc at all
// (out of scope, ExternalName, headless). The agents program only ClusterIPs (desired.ForService): a Service's
// node ports, external IPs and load-balancer IPs are kube-proxy's job, and kube-proxy leaves every Service
// the agents serve alone: in scope labelled because of the label, in scope all because it does not run. So
// whatever is listed here reaches nobody.
func NotServed(svc *corev1.Service, manageAll bool) []string {
	if !inScope(svc, manageAll) || svc.Spec.Type == corev1.ServiceTypeExternalName ||
		svc.Spec.ClusterIP == "" || svc.Spec.ClusterIP == corev1.ClusterIPNone {
		return nil
	}
	var out []string
	var nodePorts []string
	for _, p := range svc.Spec.Ports {
		if p.NodePort != 0 {
			nodePorts = append(nodePorts, portProto(p.NodePort, p.Protocol))
		}
	}
	if len(nodePorts) > 0 {
		out = append(out, fmt.Sprintf("spec.type %s's nodePort %s", svc.Spec.Type, bounded(nodePorts)))
	}
	if svc.Spec.HealthCheckNodePort != 0 {
		out = append(out, "spec.healthCheckNodePort "+strconv.Itoa(int(svc.Spec.HealthCheckNodePort)))
	}
	if len(svc.Spec.ExternalIPs) > 0 {
		out = append(out, "spec.externalIPs "+bounded(svc.Spec.ExternalIPs))
	}
	var ingress []string
	for _, in := range svc.Status.LoadBalancer.Ingress {
		if in.IP != "" {
			ingress = append(ingress, in.IP)
		}
	}
	if len(ingress) > 0 {
		out = append(out, "status.loadBalancer.ingress "+bounded(ingress))
	}
	return out
}

// NotServedNote is the note of the NotServed event for svc, or "" when nothing of it goes unserved. It names
// each unserved field with its values, what is served instead, and where to turn. Equal notes mean the same
// condition: the operator warns again only when the note changes.
func NotServedNote(svc *corev1.Service, manageAll bool) string {
	fields := NotServed(svc, manageAll)
	if len(fields) == 0 {
		return ""
	}
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 {
		ips = []string{svc.Spec.ClusterIP}
	}
	ports := make([]string, 0, len(svc.Spec.Ports))
	for _, p := range svc.Spec.Ports {
		ports = append(ports, portProto(p.Port, p.Protocol))
	}
	why := "with scope all it stands in for kube-proxy"
	if !manageAll {
		why = "kube-proxy ignores Services labelled " + v1alpha1.ServiceProxyNameLabel + "=" + v1alpha1.ServiceProxyName
	}
	return fmt.Sprintf("Not served: %s. ipvs-operator serves only the ClusterIP (%s port %s) and %s; "+
		"use kube-proxy or a load-balancer implementation for node ports, external and load-balancer IPs.",
		strings.Join(fields, "; "), bounded(ips), bounded(ports), why)
}

func portProto(port int32, proto corev1.Protocol) string {
	if proto == "" {
		proto = corev1.ProtocolTCP
	}
	return strconv.Itoa(int(port)) + "/" + string(proto)
}

// bounded joins values with ", ", listing at most maxNoteValues and counting the rest.
func bounded(values []string) string {
	if len(values) <= maxNoteValues {
		return strings.Join(values, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(values[:maxNoteValues], ", "), len(values)-maxNoteValues)
}
