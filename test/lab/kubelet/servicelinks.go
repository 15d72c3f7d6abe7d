package kubelet

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
)

// masterServiceName is the Service whose variables every pod gets, enableServiceLinks or not.
const masterServiceName = "kubernetes"

// linkedServices picks the Services whose variables a pod in namespace ns gets, as the kubelet does: the
// kubernetes Service of the default namespace always, and, with enableServiceLinks, every Service of the
// pod's own namespace (which wins over the default namespace's kubernetes for a pod that has its own).
// Services without a ClusterIP (headless, ExternalName) give no variables.
func linkedServices(services []*corev1.Service, ns string, enableServiceLinks bool) []*corev1.Service {
	byName := map[string]*corev1.Service{}
	for _, svc := range services {
		if !hasClusterIP(svc) {
			continue
		}
		switch {
		case svc.Namespace == metav1.NamespaceDefault && svc.Name == masterServiceName:
			if _, seen := byName[svc.Name]; !seen {
				byName[svc.Name] = svc
			}
		case svc.Namespace == ns && enableServiceLinks:
			byName[svc.Name] = svc
		}
	}
	out := make([]*corev1.Service, 0, len(byName))
	for _, svc := range byName {
		out = append(out, svc)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func hasClusterIP(svc *corev1.Service) bool {
	return svc.Spec.ClusterIP != "" && svc.Spec.ClusterIP != corev1.ClusterIPNone
}

// serviceLinkEnv is the environment the kubelet derives from services (see linkedServices): for each, with
// NAME its name upper-cased and '-' made '_',
//
//	NAME_SERVICE_HOST=<ClusterIP>            NAME_SERVICE_PORT=<first port>
//	NAME_SERVICE_PORT_<PORTNAME>=<port>      (each named port)
//
// and the Docker link variables, for each port (NAME_PORT only for the first):
//
//	NAME_PORT=<proto>://<ClusterIP>:<port>
//	NAME_PORT_<port>_<PROTO>=<proto>://<ClusterIP>:<port>
//	NAME_PORT_<port>_<PROTO>_PROTO=<proto>   NAME_PORT_<port>_<PROTO>_PORT=<port>   NAME_PORT_<port>_<PROTO>_ADDR=<ClusterIP>
//
// Applications (and tutorials) read these to find a Service without DNS.
func serviceLinkEnv(services []*corev1.Service) []corev1.EnvVar {
	var env []corev1.EnvVar
	add := func(k, v string) { env = append(env, corev1.EnvVar{Name: k, Value: v}) }
	for _, svc := range services {
		if !hasClusterIP(svc) {
			continue
		}
		name := envName(svc.Name)
		host := svc.Spec.ClusterIP
		add(name+"_SERVICE_HOST", host)
		for i, sp := range svc.Spec.Ports {
			port := strconv.Itoa(int(sp.Port))
			if i == 0 {
				add(name+"_SERVICE_PORT", port)
			}
			if sp.Name != "" {
				add(name+"_SERVICE_PORT_"+envName(sp.Name), port)
			}
		}
		for i, sp := range svc.Spec.Ports {
			proto := string(sp.Protocol)
			if proto == "" {
				proto = string(corev1.ProtocolTCP)
			}
			port := strconv.Itoa(int(sp.Port))
			url := strings.ToLower(proto) + "://" + net.JoinHostPort(host, port)
			if i == 0 {
				add(name+"_PORT", url)
			}
			prefix := name + "_PORT_" + port + "_" + strings.ToUpper(proto)
			add(prefix, url)
			add(prefix+"_PROTO", strings.ToLower(proto))
			add(prefix+"_PORT", port)
			add(prefix+"_ADDR", host)
		}
	}
	return env
}

func envName(s string) string { return strings.ToUpper(strings.ReplaceAll(s, "-", "_")) }

// labMasterService is the kubernetes Service as the lab's pods see it: at the API server's real address, not
// at its ClusterIP. Pods of the lab reach the API server before any proxy serves 10.96.0.1 (the agents that
// would serve it are such pods themselves, and a lab may run them in the labelled scope), so the lab keeps
// KUBERNETES_SERVICE_HOST pointing where in-cluster clients always get through.
func labMasterService(access clusterAccess) *corev1.Service {
	host, port, err := access.serviceHostPort()
	if err != nil {
		return nil
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return nil
	}
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: metav1.NamespaceDefault, Name: masterServiceName},
		Spec: corev1.ServiceSpec{ClusterIP: host, Ports: []corev1.ServicePort{
			{Name: "https", Protocol: corev1.ProtocolTCP, Port: int32(p)}, //nolint:gosec // a port number
		}},
	}
}

// podServiceEnv is the service part of a pod's environment: the cluster's Services, with the kubernetes
// Service replaced by labMasterService.
func podServiceEnv(pod *corev1.Pod, services []*corev1.Service, access clusterAccess) []corev1.EnvVar {
	all := make([]*corev1.Service, 0, len(services)+1)
	if m := labMasterService(access); m != nil {
		all = append(all, m)
	}
	for _, svc := range services {
		if svc.Namespace == metav1.NamespaceDefault && svc.Name == masterServiceName {
			continue
		}
		all = append(all, svc)
	}
	enable := pod.Spec.EnableServiceLinks == nil || *pod.Spec.EnableServiceLinks
	return serviceLinkEnv(linkedServices(all, pod.Namespace, enable))
}

// watchServices starts the informer of every Service that pods' environments are computed from, and waits
// until its cache is filled.
func (k *Kubelet) watchServices(ctx context.Context) (stop func(), err error) {
	factory := informers.NewSharedInformerFactory(k.client, 0)
	informer := factory.Core().V1().Services()
	k.services = informer.Lister()
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), informer.Informer().HasSynced) {
		factory.Shutdown()
		return nil, fmt.Errorf("waiting for the Service cache: %w", ctx.Err())
	}
	return factory.Shutdown, nil
}

// serviceList is every Service the kubelet knows (none in tests that run no informers).
func (k *Kubelet) serviceList() ([]*corev1.Service, error) {
	if k.services == nil {
		return nil, nil
	}
	return k.services.List(labels.Everything())
}
