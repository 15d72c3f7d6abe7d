package agent_test

import (
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/ipvs-operator/ipvs-operator/controllers/agent/desired"
)

// The objects below are shaped as a v1.37 API server returns them to a watch: managedFields, the labels and
// annotations their controllers set, targetRefs, zones and hints, a Node's status. The cache transforms'
// tests and the memory benchmark both use them, so what the benchmark saves is what the tests prove safe.

var created = metav1.NewTime(time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC))

func uid(kind string, i int) types.UID {
	return types.UID(fmt.Sprintf("%08x-%04x-4%03x-8%03x-%012x", i, len(kind), i%4096, i%4096, i))
}

// apiService is Service number i: a labelled single-port ClusterIP Service with a selector, as created by
// a client and defaulted by the API server.
func apiService(i int) *corev1.Service {
	name := fmt.Sprintf("svc-%05d", i)
	ip := fmt.Sprintf("10.96.%d.%d", i/250, i%250+1)
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: fmt.Sprintf("ns-%03d", i%100), UID: uid("Service", i),
			ResourceVersion: fmt.Sprint(100000 + i), CreationTimestamp: created,
			Labels: map[string]string{
				"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "shop",
				desired.ProxyNameLabel: desired.ProxyName,
			},
			Annotations: map[string]string{"meta.helm.sh/release-name": "shop", "meta.helm.sh/release-namespace": "shop"},
			ManagedFields: []metav1.ManagedFieldsEntry{{
				Manager: "helm", Operation: metav1.ManagedFieldsOperationUpdate, APIVersion: "v1", Time: &created,
				FieldsType: "FieldsV1",
				FieldsV1: metav1.NewFieldsV1(`{"f:metadata":{"f:annotations":{".":{},"f:meta.helm.sh/release-name":{},` +
					`"f:meta.helm.sh/release-namespace":{}},"f:labels":{".":{},"f:app.kubernetes.io/name":{},` +
					`"f:app.kubernetes.io/part-of":{},"f:service.kubernetes.io/service-proxy-name":{}}},` +
					`"f:spec":{"f:internalTrafficPolicy":{},"f:ports":{".":{},"k:{\"port\":80,\"protocol\":\"TCP\"}":` +
					`{".":{},"f:name":{},"f:port":{},"f:protocol":{},"f:targetPort":{}}},"f:selector":{},` +
					`"f:sessionAffinity":{},"f:type":{}}}`),
			}},
		},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeClusterIP, ClusterIP: ip, ClusterIPs: []string{ip},
			Selector:              map[string]string{"app.kubernetes.io/name": name},
			Ports:                 []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromString("http")}},
			SessionAffinity:       corev1.ServiceAffinityNone,
			IPFamilies:            []corev1.IPFamily{corev1.IPv4Protocol},
			IPFamilyPolicy:        ptr.To(corev1.IPFamilyPolicySingleStack),
			InternalTrafficPolicy: ptr.To(corev1.ServiceInternalTrafficPolicyCluster),
		},
		Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{}},
	}
}

// apiEndpointSlice is the slice the EndpointSlice controller writes for svc: n endpoints (pods on nodes
// node-0000...), the last one not ready and terminating.
func apiEndpointSlice(svc *corev1.Service, i, n int) *discoveryv1.EndpointSlice {
	eps := make([]discoveryv1.Endpoint, n)
	for j := range eps {
		pod := fmt.Sprintf("%s-7d9c%04d-%05d", svc.Name, i%10000, j)
		ready := j < n-1
		eps[j] = discoveryv1.Endpoint{
			Addresses: []string{fmt.Sprintf("10.%d.%d.%d", 128+j, i/250, i%250+1)},
			Conditions: discoveryv1.EndpointConditions{
				Ready: ptr.To(ready), Serving: ptr.To(true), Terminating: ptr.To(!ready),
			},
			NodeName:  ptr.To(fmt.Sprintf("node-%04d", (i+j)%100)),
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: svc.Namespace, Name: pod, UID: uid("Pod", i*n+j)},
			Zone:      ptr.To(fmt.Sprintf("zone-%c", 'a'+(i+j)%3)),
			Hints:     &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: fmt.Sprintf("zone-%c", 'a'+(i+j)%3)}}},
		}
	}
	labels := map[string]string{
		discoveryv1.LabelServiceName: svc.Name,
		discoveryv1.LabelManagedBy:   "endpointslice-controller.k8s.io",
	}
	for k, v := range svc.Labels { // the EndpointSlice controller copies the Service's labels
		labels[k] = v
	}
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name: svc.Name + "-x7k2p", GenerateName: svc.Name + "-", Namespace: svc.Namespace, UID: uid("EndpointSlice", i),
			ResourceVersion: fmt.Sprint(200000 + i), Generation: 3, CreationTimestamp: created, Labels: labels,
			Annotations: map[string]string{corev1.EndpointsLastChangeTriggerTime: "2026-11-30T12:00:01Z"},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "v1", Kind: "Service", Name: svc.Name, UID: svc.UID,
				Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true),
			}},
			ManagedFields: []metav1.ManagedFieldsEntry{{
				Manager: "kube-controller-manager", Operation: metav1.ManagedFieldsOperationUpdate,
				APIVersion: "discovery.k8s.io/v1", Time: &created, FieldsType: "FieldsV1",
				FieldsV1: metav1.NewFieldsV1(`{"f:addressType":{},"f:endpoints":{},"f:metadata":{"f:annotations":{".":{},` +
					`"f:endpoints.kubernetes.io/last-change-trigger-time":{}},"f:generateName":{},"f:labels":{".":{},` +
					`"f:app.kubernetes.io/name":{},"f:app.kubernetes.io/part-of":{},` +
					`"f:endpointslice.kubernetes.io/managed-by":{},"f:kubernetes.io/service-name":{},` +
					`"f:service.kubernetes.io/service-proxy-name":{}},"f:ownerReferences":{".":{},` +
					`"k:{\"uid\":\"` + string(svc.UID) + `\"}":{}}},"f:ports":{}}`),
			}},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
		Endpoints:   eps,
	}
}

// apiNode is Node number i as the kubelet and the node IPAM controller keep it.
func apiNode(i int) *corev1.Node {
	name := fmt.Sprintf("node-%04d", i)
	cidr := fmt.Sprintf("10.244.%d.0/24", i)
	images := make([]corev1.ContainerImage, 25)
	for j := range images {
		images[j] = corev1.ContainerImage{
			Names: []string{
				fmt.Sprintf("registry.example/team-%02d/app@sha256:%064x", j, j*7919+i),
				fmt.Sprintf("registry.example/team-%02d/app:v1.%d.0", j, j),
			},
			SizeBytes: int64(20_000_000 + j*1_000_000),
		}
	}
	conds := []corev1.NodeConditionType{corev1.NodeMemoryPressure, corev1.NodeDiskPressure, corev1.NodePIDPressure, corev1.NodeReady}
	status := corev1.NodeStatus{
		Capacity:    corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("8"), corev1.ResourceMemory: resource.MustParse("32Gi"), corev1.ResourcePods: resource.MustParse("110")},
		Allocatable: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("7800m"), corev1.ResourceMemory: resource.MustParse("31Gi"), corev1.ResourcePods: resource.MustParse("110")},
		Addresses:   []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: fmt.Sprintf("192.168.%d.%d", i/250, i%250+1)}, {Type: corev1.NodeHostName, Address: name}},
		NodeInfo: corev1.NodeSystemInfo{
			MachineID: fmt.Sprintf("%032x", i), SystemUUID: string(uid("Node", i)), BootID: string(uid("Boot", i)),
			KernelVersion: "6.1.0-27-amd64", OSImage: "Debian GNU/Linux 12 (bookworm)", ContainerRuntimeVersion: "containerd://2.1.4",
			KubeletVersion: "v1.37.1", OperatingSystem: "linux", Architecture: "amd64",
		},
		Images: images,
	}
	for _, c := range conds {
		status.Conditions = append(status.Conditions, corev1.NodeCondition{
			Type: c, Status: corev1.ConditionFalse, LastHeartbeatTime: created, LastTransitionTime: created,
			Reason: "KubeletHasSufficient" + string(c), Message: "kubelet has sufficient resources for " + string(c),
		})
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, UID: uid("Node", i), ResourceVersion: fmt.Sprint(300000 + i), CreationTimestamp: created,
			Labels: map[string]string{
				"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
				"beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64",
				"topology.kubernetes.io/zone": fmt.Sprintf("zone-%c", 'a'+i%3), "node.kubernetes.io/instance-type": "m5.2xlarge",
			},
			Annotations: map[string]string{
				"node.alpha.kubernetes.io/ttl": "0", "volumes.kubernetes.io/controller-managed-attach-detach": "true",
			},
			ManagedFields: []metav1.ManagedFieldsEntry{
				{Manager: "kubelet", Operation: metav1.ManagedFieldsOperationUpdate, APIVersion: "v1", Time: &created, FieldsType: "FieldsV1",
					FieldsV1: metav1.NewFieldsV1(`{"f:metadata":{"f:annotations":{".":{},"f:volumes.kubernetes.io/controller-managed-attach-detach":{}},` +
						`"f:labels":{".":{},"f:beta.kubernetes.io/arch":{},"f:beta.kubernetes.io/os":{},"f:kubernetes.io/arch":{},` +
						`"f:kubernetes.io/hostname":{},"f:kubernetes.io/os":{}}}}`)},
				{Manager: "kube-controller-manager", Operation: metav1.ManagedFieldsOperationUpdate, APIVersion: "v1", Time: &created, FieldsType: "FieldsV1",
					FieldsV1: metav1.NewFieldsV1(`{"f:metadata":{"f:annotations":{"f:node.alpha.kubernetes.io/ttl":{}}},"f:spec":{"f:podCIDR":{},"f:podCIDRs":{".":{},"v:\"` + cidr + `\"":{}}}}`)},
				{Manager: "kubelet", Operation: metav1.ManagedFieldsOperationUpdate, APIVersion: "v1", Time: &created, FieldsType: "FieldsV1", Subresource: "status",
					FieldsV1: metav1.NewFieldsV1(`{"f:status":{"f:allocatable":{},"f:capacity":{},"f:conditions":{"k:{\"type\":\"DiskPressure\"}":{"f:lastHeartbeatTime":{}},` +
						`"k:{\"type\":\"MemoryPressure\"}":{"f:lastHeartbeatTime":{}},"k:{\"type\":\"PIDPressure\"}":{"f:lastHeartbeatTime":{}},` +
						`"k:{\"type\":\"Ready\"}":{"f:lastHeartbeatTime":{},"f:lastTransitionTime":{},"f:message":{},"f:reason":{},"f:status":{}}},` +
						`"f:images":{},"f:nodeInfo":{"f:bootID":{},"f:containerRuntimeVersion":{},"f:kernelVersion":{}}}}`)},
			},
		},
		Spec:   corev1.NodeSpec{PodCIDR: cidr, PodCIDRs: []string{cidr}, ProviderID: "aws:///eu-west-1a/i-0" + fmt.Sprintf("%016x", i)},
		Status: status,
	}
}
