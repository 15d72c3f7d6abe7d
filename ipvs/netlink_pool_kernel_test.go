//go:build kernel

package ipvs_test

import (
	"fmt"
	"net/netip"
	"sync/atomic"
	"testing"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
)

// BenchmarkKernelProgramServices programs virtual servers with five real servers each from six goroutines,
// as the agent's five workers and its start-up pass do, through one netlink socket and through the pool of
// DefaultHandles. One op is one virtual server (six kernel calls). Run in the lab VM (2 vCPUs) from a bare
// lab (`go run ./test/lab/cmd/lab up --bare --no-kubelets --detach`, the binary copied to its share's bin/):
//
//	go run ./test/lab/cmd/lab exec root /mnt/host/bin/ipvs-kernel.test -test.run '^$' \
//	    -test.bench BenchmarkKernelProgramServices -test.benchtime 3000x -test.count 3
//
// 2026-12-01: handles=1 1.06-1.13 ms/op, handles=4 0.50-0.72 ms/op.
func BenchmarkKernelProgramServices(b *testing.B) {
	for _, handles := range []int{1, ipvs.DefaultHandles} {
		b.Run(fmt.Sprintf("handles=%d", handles), func(b *testing.B) {
			requireKernel(b)
			n := newTestNS(b)
			i, err := ipvs.NewNetlinkHandles(n.path, handles)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { i.(interface{ Close() error }).Close() })
			var next atomic.Uint32
			b.SetParallelism(3) // GOMAXPROCS 2 in the VM: six goroutines
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					s := next.Add(1)
					k := ipvs.ServiceKey{Address: netip.AddrFrom4([4]byte{10, 96, byte(s >> 8), byte(s)}), Port: 80, Protocol: ipvs.TCP}
					if err := i.AddService(ipvs.Service{ServiceKey: k, Scheduler: "rr"}); err != nil {
						b.Error(err)
						return
					}
					for e := range 5 {
						d := ipvs.Destination{DestinationKey: ipvs.DestinationKey{
							Address: netip.AddrFrom4([4]byte{10, 244, byte(s >> 8), byte(s)}), Port: 8080 + uint16(e)}, Weight: 1}
						if err := i.AddDestination(k, d); err != nil {
							b.Error(err)
							return
						}
					}
				}
			})
		})
	}
}
