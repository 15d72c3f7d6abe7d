package controlplane

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	apiserverv1beta1 "k8s.io/apiserver/pkg/apis/apiserver/v1beta1"
	"sigs.k8s.io/yaml"
)

// EgressSelectorConfiguration is kube-apiserver's --egress-selector-config-file for a lab whose cluster is
// reached through the HTTP CONNECT proxy listening on the unix socket uds. The "cluster" selection covers
// everything the API server dials in the cluster: the kubelets' API (logs, exec, port-forward, nodes/proxy),
// pods/proxy and services/proxy, and webhooks named by a Service. The API server runs on the host, the pods
// inside the VM: without a way in, pods/proxy fails (upstream's "should create endpoints for unready pods"
// reads its pods that way). etcd and the control plane's own egress stay direct.
//
// HTTPConnect over a unix socket rather than TCP: kube-apiserver v1.37 always speaks TLS to a TCP proxy
// (an http:// URL passes validation but its nil TLS settings are then dereferenced), and a socket in the run
// directory needs no certificate.
func EgressSelectorConfiguration(uds string) ([]byte, error) {
	return yaml.Marshal(apiserverv1beta1.EgressSelectorConfiguration{
		TypeMeta: metav1.TypeMeta{APIVersion: apiserverv1beta1.SchemeGroupVersion.String(), Kind: "EgressSelectorConfiguration"},
		EgressSelections: []apiserverv1beta1.EgressSelection{{
			Name: "cluster",
			Connection: apiserverv1beta1.Connection{
				ProxyProtocol: apiserverv1beta1.ProtocolHTTPConnect,
				Transport:     &apiserverv1beta1.Transport{UDS: &apiserverv1beta1.UDSTransport{UDSName: uds}},
			},
		}},
	})
}
