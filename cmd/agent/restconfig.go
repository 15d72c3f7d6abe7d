package main

import "k8s.io/client-go/rest"

// apiConfig is the agent's configuration for talking to the API server: cfg with response compression off.
//
// Every node's agent watches every Service and EndpointSlice of the cluster. With compression on, the API
// server gzips each node's watch stream and each agent gunzips it: at 10,000 Services that was 3.3 of the
// 7.6 CPU seconds the agent spent decoding its watches in the lab VM, nearly all of it in the cold start,
// and the API server pays the matching compression once per node. The path from a node to the API server
// is a data-centre network, where Kubernetes turns compression off for its own control-plane components
// for the same reason (kubernetes#80919, kubernetes#112296): there it adds CPU and latency, not speed.
func apiConfig(cfg *rest.Config) *rest.Config {
	out := rest.CopyConfig(cfg)
	out.DisableCompression = true
	return out
}
