// Package fake keeps an IPVS table, a dummy interface's addresses and the agent's nftables sets in memory,
// for unit tests and benchmarks. It answers like the kernel does through package ipvs's netlink code: the
// same *ipvs.Error values (errors.Is(err, ipvs.ErrExists) and errors.Is(err, unix.EEXIST) both work), the
// same refusals (unknown scheduler, negative weight, mixed address families), whole-second persistence.
// Every method counts as one kernel operation of its verb, so a benchmark can report operations per
// change, and any verb can be made to fail. All types are safe for concurrent use.
package fake

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
)

// Verb names one method of ipvs.Interface, ipvs.VIPs or ipvs.Rules, for counting and error injection.
type Verb string

// Verbs of ipvs.Interface.
const (
	Services          Verb = ipvs.OpServices
	Service           Verb = ipvs.OpService
	AddService        Verb = ipvs.OpAddService
	UpdateService     Verb = ipvs.OpUpdateService
	DeleteService     Verb = ipvs.OpDeleteService
	Destinations      Verb = ipvs.OpDestinations
	AddDestination    Verb = ipvs.OpAddDestination
	UpdateDestination Verb = ipvs.OpUpdateDestination
	DeleteDestination Verb = ipvs.OpDeleteDestination
	// AllDestinations is ipvs.DestinationDumper's verb.
	AllDestinations Verb = "AllDestinations"
	Batch           Verb = "Batch"
)

// Verbs of ipvs.VIPs.
const (
	EnsureInterface Verb = "EnsureInterface"
	InterfaceUp     Verb = "InterfaceUp"
	List            Verb = "List"
	Bind            Verb = "Bind"
	BindAll         Verb = "BindAll"
	Unbind          Verb = "Unbind"
	DeleteInterface Verb = "DeleteInterface"
)

// Verbs of ipvs.Rules.
const (
	Ensure   Verb = "Ensure"
	Update   Verb = "Update"
	Elements Verb = "Elements"
	Exists   Verb = "Exists"
	Delete   Verb = "Delete"
)

// DefaultSchedulers are the schedulers a Debian 6.1 kernel ships (ip_vs_<name> modules).
var DefaultSchedulers = []string{"rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos"}

// recorder counts operations and holds injected errors. Its methods are called with the owner's lock held.
type recorder struct {
	ops  map[Verb]int
	errs map[Verb]error
}

// op records one operation and returns the injected error for the verb, if any.
func (r *recorder) op(v Verb) error {
	if r.ops == nil {
		r.ops = map[Verb]int{}
	}
	r.ops[v]++
	return r.errs[v]
}

func (r *recorder) setError(v Verb, err error) {
	if r.errs == nil {
		r.errs = map[Verb]error{}
	}
	if err == nil {
		delete(r.errs, v)
		return
	}
	r.errs[v] = err
}

// counters is the lock and operation recorder every fake embeds; its methods are the fakes' shared test
// controls. The lock also guards the embedding fake's own state.
type counters struct {
	mu  sync.Mutex
	rec recorder
}

// SetError makes every later call of verb fail with err (still counted); nil clears it.
func (c *counters) SetError(verb Verb, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rec.setError(verb, err)
}

// Ops returns how many times each verb was called since the fake was made or ResetOps.
func (c *counters) Ops() map[Verb]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.rec.ops)
}

// ResetOps sets every counter back to zero.
func (c *counters) ResetOps() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rec.ops = nil
}

// IPVS is an in-memory ipvs.Interface. The zero value is not usable: call New.
type IPVS struct {
	counters
	schedulers map[string]bool
	services   map[ipvs.ServiceKey]*service
}

type service struct {
	ipvs.Service
	dests map[ipvs.DestinationKey]*ipvs.ObservedDestination
}

var _ ipvs.Interface = (*IPVS)(nil)

// New returns an empty table that knows DefaultSchedulers.
func New() *IPVS {
	f := &IPVS{schedulers: map[string]bool{}, services: map[ipvs.ServiceKey]*service{}}
	for _, s := range DefaultSchedulers {
		f.schedulers[s] = true
	}
	return f
}

// SetSchedulers replaces the schedulers the fake kernel knows; AddService and UpdateService with another
// one fail with ENOENT, like a kernel without the ip_vs_<name> module.
func (f *IPVS) SetSchedulers(names ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.schedulers = map[string]bool{}
	for _, s := range names {
		f.schedulers[s] = true
	}
}

// OpCount returns how many times verb was called; TotalOps the sum over all verbs.
func (f *IPVS) OpCount(v Verb) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rec.ops[v]
}

// TotalOps returns the number of calls of any verb.
func (f *IPVS) TotalOps() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.rec.ops {
		n += c
	}
	return n
}

// SetConnections sets the connection counts the kernel would report for a real server, for drain tests.
func (f *IPVS) SetConnections(svc ipvs.ServiceKey, dst ipvs.DestinationKey, active, inactive int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.services[svc]
	if !ok {
		return errno(ipvs.OpDestinations, svc.String(), unix.ESRCH)
	}
	d, ok := s.dests[dst]
	if !ok {
		return errno(ipvs.OpDestinations, svc.String()+" -r "+dst.String(), unix.ENOENT)
	}
	d.ActiveConnections, d.InactiveConnections = active, inactive
	return nil
}

// Services lists the virtual servers, sorted by address, protocol and port.
func (f *IPVS) Services() ([]ipvs.Service, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.rec.op(Services); err != nil {
		return nil, err
	}
	out := make([]ipvs.Service, 0, len(f.services))
	for _, s := range f.services {
		out = append(out, s.Service)
	}
	slices.SortFunc(out, func(a, b ipvs.Service) int { return compareServiceKeys(a.ServiceKey, b.ServiceKey) })
	return out, nil
}

// Service reads one virtual server; a missing one is ESRCH (ipvs.ErrNotFound), as the kernel answers.
func (f *IPVS) Service(k ipvs.ServiceKey) (ipvs.Service, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.rec.op(Service); err != nil {
		return ipvs.Service{}, err
	}
	s, ok := f.services[k]
	if !ok {
		return ipvs.Service{}, errno(ipvs.OpService, k.String(), unix.ESRCH)
	}
	return s.Service, nil
}

// Flush removes every virtual server, the agent's and anyone else's, as `ipvsadm -C` or kube-proxy's
// leftover cleanup does. It is a test control, not counted.
func (f *IPVS) Flush() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.services = map[ipvs.ServiceKey]*service{}
}

var _ ipvs.Batcher = (*IPVS)(nil)

// Batch makes the additions in order with AddService and AddDestination (each counted as such), and counts
// one Batch.
func (f *IPVS) Batch(adds []ipvs.Addition) []error {
	f.mu.Lock()
	err := f.rec.op(Batch)
	f.mu.Unlock()
	errs := make([]error, len(adds))
	for i, a := range adds {
		switch {
		case err != nil:
			errs[i] = err
		case a.Op == ipvs.OpAddService:
			errs[i] = f.AddService(a.Service)
		case a.Op == ipvs.OpAddDestination:
			errs[i] = f.AddDestination(a.Service.ServiceKey, a.Destination)
		default:
			errs[i] = errno(a.Op, a.Service.ServiceKey.String(), unix.EINVAL)
		}
	}
	return errs
}

// AddService creates a virtual server.
func (f *IPVS) AddService(s ipvs.Service) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.rec.op(AddService); err != nil {
		return err
	}
	obj := s.ServiceKey.String()
	if err := checkKey(ipvs.OpAddService, obj, s.Address); err != nil {
		return err
	}
	if _, ok := f.services[s.ServiceKey]; ok {
		return errno(ipvs.OpAddService, obj, unix.EEXIST)
	}
	if !f.schedulers[s.Scheduler] {
		return errno(ipvs.OpAddService, obj, unix.ENOENT)
	}
	f.services[s.ServiceKey] = &service{Service: kernelService(s), dests: map[ipvs.DestinationKey]*ipvs.ObservedDestination{}}
	return nil
}

// UpdateService changes a virtual server's scheduler or persistence, keeping its real servers.
func (f *IPVS) UpdateService(s ipvs.Service) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.rec.op(UpdateService); err != nil {
		return err
	}
	obj := s.ServiceKey.String()
	cur, ok := f.services[s.ServiceKey]
	if !ok {
		return errno(ipvs.OpUpdateService, obj, unix.ESRCH)
	}
	if !f.schedulers[s.Scheduler] {
		return errno(ipvs.OpUpdateService, obj, unix.ENOENT)
	}
	cur.Service = kernelService(s)
	return nil
}

// DeleteService removes a virtual server and its real servers.
func (f *IPVS) DeleteService(k ipvs.ServiceKey) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.rec.op(DeleteService); err != nil {
		return err
	}
	if _, ok := f.services[k]; !ok {
		return errno(ipvs.OpDeleteService, k.String(), unix.ESRCH)
	}
	delete(f.services, k)
	return nil
}

// Destinations lists a virtual server's real servers, sorted by address and port.
func (f *IPVS) Destinations(k ipvs.ServiceKey) ([]ipvs.ObservedDestination, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.rec.op(Destinations); err != nil {
		return nil, err
	}
	s, ok := f.services[k]
	if !ok {
		return nil, errno(ipvs.OpDestinations, k.String(), unix.ESRCH)
	}
	if len(s.dests) == 0 {
		return nil, nil // as the netlink implementation: nil, not an empty slice
	}
	out := make([]ipvs.ObservedDestination, 0, len(s.dests))
	for _, d := range s.dests {
		out = append(out, *d)
	}
	slices.SortFunc(out, func(a, b ipvs.ObservedDestination) int {
		return compareDestinationKeys(a.DestinationKey, b.DestinationKey)
	})
	return out, nil
}

// AllDestinations implements ipvs.DestinationDumper: every virtual server's real servers, each list sorted.
func (f *IPVS) AllDestinations() (map[ipvs.ServiceKey][]ipvs.ObservedDestination, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.rec.op(AllDestinations); err != nil {
		return nil, err
	}
	out := make(map[ipvs.ServiceKey][]ipvs.ObservedDestination, len(f.services))
	for k, s := range f.services {
		ds := make([]ipvs.ObservedDestination, 0, len(s.dests))
		for _, d := range s.dests {
			ds = append(ds, *d)
		}
		slices.SortFunc(ds, func(a, b ipvs.ObservedDestination) int {
			return compareDestinationKeys(a.DestinationKey, b.DestinationKey)
		})
		out[k] = ds
	}
	return out, nil
}

// AddDestination adds a real server.
func (f *IPVS) AddDestination(k ipvs.ServiceKey, d ipvs.Destination) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.rec.op(AddDestination); err != nil {
		return err
	}
	s, obj, err := f.destinationTarget(ipvs.OpAddDestination, k, d)
	if err != nil {
		return err
	}
	if _, ok := s.dests[d.DestinationKey]; ok {
		return errno(ipvs.OpAddDestination, obj, unix.EEXIST)
	}
	s.dests[d.DestinationKey] = &ipvs.ObservedDestination{Destination: d}
	return nil
}

// UpdateDestination changes a real server's weight, keeping its connection counts.
func (f *IPVS) UpdateDestination(k ipvs.ServiceKey, d ipvs.Destination) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.rec.op(UpdateDestination); err != nil {
		return err
	}
	s, obj, err := f.destinationTarget(ipvs.OpUpdateDestination, k, d)
	if err != nil {
		return err
	}
	cur, ok := s.dests[d.DestinationKey]
	if !ok {
		return errno(ipvs.OpUpdateDestination, obj, unix.ENOENT)
	}
	cur.Weight = d.Weight
	return nil
}

// DeleteDestination removes a real server.
func (f *IPVS) DeleteDestination(k ipvs.ServiceKey, dk ipvs.DestinationKey) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.rec.op(DeleteDestination); err != nil {
		return err
	}
	obj := k.String() + " -r " + dk.String()
	s, ok := f.services[k]
	if !ok {
		return errno(ipvs.OpDeleteDestination, obj, unix.ESRCH)
	}
	if _, ok := s.dests[dk]; !ok {
		return errno(ipvs.OpDeleteDestination, obj, unix.ENOENT)
	}
	delete(s.dests, dk)
	return nil
}

// destinationTarget applies the kernel's checks for adding or updating a real server.
func (f *IPVS) destinationTarget(op string, k ipvs.ServiceKey, d ipvs.Destination) (*service, string, error) {
	obj := k.String() + " -r " + d.DestinationKey.String()
	if err := checkKey(op, obj, d.Address); err != nil {
		return nil, obj, err
	}
	s, ok := f.services[k]
	if !ok {
		return nil, obj, errno(op, obj, unix.ESRCH)
	}
	if d.Weight < 0 {
		return nil, obj, errno(op, obj, unix.ERANGE) // ip_vs_ctl.c: "server weight less than zero"
	}
	if d.Address.Is4() != k.Address.Is4() {
		return nil, obj, errno(op, obj, unix.EINVAL) // mixed families are for tunnelling real servers only
	}
	return s, obj, nil
}

// kernelService is what the kernel keeps of a Service: whole-second persistence, rounded up.
func kernelService(s ipvs.Service) ipvs.Service {
	if s.Persistence > 0 {
		s.Persistence = (s.Persistence + time.Second - 1).Truncate(time.Second)
	} else {
		s.Persistence = 0
	}
	return s
}

func checkKey(op, obj string, a netip.Addr) error {
	if !a.IsValid() || a.Is4In6() || a.Zone() != "" {
		return &ipvs.Error{Op: op, Object: obj, Err: fmt.Errorf("invalid address %q: %w", a, unix.EINVAL)}
	}
	return nil
}

func errno(op, obj string, e unix.Errno) error { return &ipvs.Error{Op: op, Object: obj, Err: e} }

func compareServiceKeys(a, b ipvs.ServiceKey) int {
	return cmp.Or(a.Address.Compare(b.Address), cmp.Compare(a.Protocol, b.Protocol), cmp.Compare(a.Port, b.Port))
}

func compareDestinationKeys(a, b ipvs.DestinationKey) int {
	return cmp.Or(a.Address.Compare(b.Address), cmp.Compare(a.Port, b.Port))
}
