package plan

import (
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
)

// Kind is what an Op does to the kernel. The values are in the order a plan emits them.
type Kind uint8

// The kinds of operation, in plan order.
const (
	BindVIP Kind = iota + 1
	AddService
	UpdateService
	AddDestination
	UpdateDestination
	DeleteDestination
	DeleteService
	UnbindVIP
)

// Kinds lists every Kind, in plan order (for metrics that pre-create their series).
var Kinds = []Kind{BindVIP, AddService, UpdateService, AddDestination, UpdateDestination, DeleteDestination,
	DeleteService, UnbindVIP}

// String returns the kind as a metric label: "add_service", "bind_vip", ...
func (k Kind) String() string {
	switch k {
	case BindVIP:
		return "bind_vip"
	case AddService:
		return "add_service"
	case UpdateService:
		return "update_service"
	case AddDestination:
		return "add_destination"
	case UpdateDestination:
		return "update_destination"
	case DeleteDestination:
		return "delete_destination"
	case DeleteService:
		return "delete_service"
	case UnbindVIP:
		return "unbind_vip"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Op is one kernel operation. Which fields matter depends on Kind: VIP for BindVIP and UnbindVIP; Service for
// the service kinds (only its ServiceKey for DeleteService); Service.ServiceKey and Destination for the
// destination kinds (only the DestinationKey for DeleteDestination).
type Op struct {
	Kind        Kind
	Service     ipvs.Service
	Destination ipvs.Destination
	VIP         netip.Addr
}

// String renders the op as the command that would do the same, for logs:
// "ipvsadm -a -t 10.96.0.10:80 -r 10.244.1.5:8080 -m -w 1", "ip addr add 10.96.0.10/32".
func (o Op) String() string {
	switch o.Kind {
	case BindVIP:
		return "ip addr add " + hostPrefix(o.VIP)
	case UnbindVIP:
		return "ip addr del " + hostPrefix(o.VIP)
	case AddService:
		return "ipvsadm -A " + o.Service.ServiceKey.String() + schedulerFlags(o.Service)
	case UpdateService:
		return "ipvsadm -E " + o.Service.ServiceKey.String() + schedulerFlags(o.Service)
	case DeleteService:
		return "ipvsadm -D " + o.Service.ServiceKey.String()
	case AddDestination:
		return fmt.Sprintf("ipvsadm -a %s -r %s -m -w %d", o.Service.ServiceKey, o.Destination.DestinationKey, o.Destination.Weight)
	case UpdateDestination:
		return fmt.Sprintf("ipvsadm -e %s -r %s -m -w %d", o.Service.ServiceKey, o.Destination.DestinationKey, o.Destination.Weight)
	case DeleteDestination:
		return fmt.Sprintf("ipvsadm -d %s -r %s", o.Service.ServiceKey, o.Destination.DestinationKey)
	}
	return o.Kind.String()
}

func hostPrefix(a netip.Addr) string { return netip.PrefixFrom(a, a.BitLen()).String() }

func schedulerFlags(s ipvs.Service) string {
	f := " -s " + s.Scheduler
	if s.Persistence > 0 {
		f += " -p " + strconv.FormatInt(int64(s.Persistence/time.Second), 10)
	}
	return f
}
