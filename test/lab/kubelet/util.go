package kubelet

import (
	"net"

	"k8s.io/apimachinery/pkg/labels"
)

func everything() labels.Selector { return labels.Everything() }

func parseIP(s string) net.IP { return net.ParseIP(s) }
