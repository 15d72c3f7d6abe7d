package dataplane

import (
	"context"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
)

// agentInterface is the dummy interface the agent binds ClusterIPs to (its --interface default).
const agentInterface = "ipvs0"

// ipvsSave reads `ipvsadm -Sn` on a node and parses it.
func ipvsSave(ctx context.Context, drv Driver, node string) ([]ipvs.VirtualServer, string) {
	out, err := drv.NodeExec(ctx, node, "ipvsadm", "-Sn")
	Expect(err).NotTo(HaveOccurred(), "ipvsadm -Sn on %s: %s", node, out)
	vs, err := ipvs.ParseSave(out)
	Expect(err).NotTo(HaveOccurred(), "parsing ipvsadm -Sn on %s:\n%s", node, out)
	return vs, out
}

// virtualServer finds the virtual server for vip:port/proto in a node's table (nil if absent).
func virtualServer(table []ipvs.VirtualServer, vip string, port int32, proto ipvs.Protocol) *ipvs.VirtualServer {
	addr := netip.MustParseAddr(vip)
	for i := range table {
		k := table[i].ServiceKey
		if k.Address == addr && k.Port == uint16(port) && k.Protocol == proto {
			return &table[i]
		}
	}
	return nil
}

// watchVirtualServer reads node's IPVS table (`ipvsadm -Sn`) every 300 ms, from now until stop is called,
// and hands each reading of the virtual server vip:port/proto to seen, when it is there: for checks that
// last through an event, such as an agent's restart. stop waits for the reading under way.
func watchVirtualServer(ctx context.Context, drv Driver, node, vip string, port int32, proto ipvs.Protocol,
	seen func(*ipvs.VirtualServer)) (stop func()) {
	done := make(chan struct{})
	var polled sync.WaitGroup
	polled.Go(func() {
		defer GinkgoRecover()
		for {
			select {
			case <-done:
				return
			case <-time.After(300 * time.Millisecond):
			}
			out, err := drv.NodeExec(ctx, node, "ipvsadm", "-Sn")
			if err != nil {
				continue
			}
			table, err := ipvs.ParseSave(out)
			if err != nil {
				continue
			}
			if vs := virtualServer(table, vip, port, proto); vs != nil {
				seen(vs)
			}
		}
	})
	return func() {
		close(done)
		polled.Wait()
	}
}

// realServers renders a virtual server's destinations as sorted "ip:port w=N" strings for readable failures.
func realServers(vs *ipvs.VirtualServer) []string {
	if vs == nil {
		return nil
	}
	out := make([]string, 0, len(vs.Destinations))
	for _, d := range vs.Destinations {
		out = append(out, d.DestinationKey.String()+" w="+strconv.Itoa(d.Weight))
	}
	slices.Sort(out)
	return out
}

// activeRealServers are the destinations with a weight above 0, as sorted "ip:port".
func activeRealServers(vs *ipvs.VirtualServer) []string {
	if vs == nil {
		return nil
	}
	var out []string
	for _, d := range vs.Destinations {
		if d.Weight > 0 {
			out = append(out, d.DestinationKey.String())
		}
	}
	slices.Sort(out)
	return out
}

// endpoints renders ips with a port as sorted "ip:port".
func endpoints(ips []string, port int32) []string {
	out := make([]string, len(ips))
	for i, ip := range ips {
		out[i] = hostPort(ip, port)
	}
	slices.Sort(out)
	return out
}

// boundVIPs lists the addresses on the agent's dummy interface of a node.
func boundVIPs(ctx context.Context, drv Driver, node string) string {
	out, err := drv.NodeExec(ctx, node, "ip", "-o", "addr", "show", "dev", agentInterface)
	Expect(err).NotTo(HaveOccurred(), "ip addr on %s: %s", node, out)
	return out
}
