package dataplane

import (
	"fmt"
	"maps"
	"math/rand"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	lbv1alpha1 "github.com/ipvs-operator/ipvs-operator/api/v1alpha1"
)

// The churn test's step generator: a pure function of a seed that plays the churn on a small model of the
// pool (which Services exist and their shape, the Deployments' sizes, the policies), so that the same seed
// always gives the same sequence and a failure replays. Choices that depend on the cluster (which pod's
// readiness to fail) are resolved when the step runs, by an index the generator draws.

type stepKind string

const (
	stepCreateService  stepKind = "create-service"
	stepEditService    stepKind = "edit-service"
	stepDeleteService  stepKind = "delete-service"
	stepEditSlice      stepKind = "edit-slice"
	stepScale          stepKind = "scale"
	stepFailReadiness  stepKind = "fail-readiness"
	stepPassReadiness  stepKind = "restore-readiness"
	stepCreatePolicy   stepKind = "create-policy"
	stepConflictPolicy stepKind = "conflict-policy"
	stepEditPolicy     stepKind = "edit-policy"
	stepDeletePolicy   stepKind = "delete-policy"
	stepRestartAgent   stepKind = "restart-agent"
	stepIPVSClear      stepKind = "ipvsadm-C"
	stepNftFlush       stepKind = "nft-flush-ruleset"
	stepKubeProxyFlush stepKind = "kube-proxy-cleanup"
)

// drift reports whether a step changes a node's kernel behind the agent's back. Such steps flush every
// Service of the node, the steady ones included, so they are held to the drift bound and excused from the
// steady loop (see churn.go).
func (k stepKind) drift() bool {
	return k == stepIPVSClear || k == stepNftFlush || k == stepKubeProxyFlush
}

// The pool: small enough for two nodes in a VM under TCG emulation to keep up.
const (
	churnMaxServices = 6
	churnMaxPolicies = 4
	churnMaxReplicas = 3
)

// churnDeployments are the Deployments the churn Services select; every pod serves all of echoCatalog.
var churnDeployments = []string{"d0", "d1", "d2"}

// churnGroups are the values of the label policies select churn Services by.
var churnGroups = []string{"g0", "g1"}

const churnGroupLabel = "churn-group"

// portShape is a Service port of the catalog below: a fixed name and protocol, with a port and target chosen
// per Service.
type portShape struct {
	Name   string
	Proto  corev1.Protocol
	Port   int32
	Target intstr.IntOrString
}

// portCatalog: each entry's targets are what echo pods serve for it (number or container port name); two
// entries differ only in name so that a Service can have TCP and UDP on the same port number.
var portCatalog = []struct {
	name    string
	proto   corev1.Protocol
	targets []intstr.IntOrString
}{
	{"http", corev1.ProtocolTCP, []intstr.IntOrString{intstr.FromInt32(8080), intstr.FromString("http"), intstr.FromInt32(8443)}},
	{"https", corev1.ProtocolTCP, []intstr.IntOrString{intstr.FromInt32(8443), intstr.FromString("https")}},
	{"dns", corev1.ProtocolUDP, []intstr.IntOrString{intstr.FromInt32(5353), intstr.FromString("dns")}},
	{"dns-tcp", corev1.ProtocolTCP, []intstr.IntOrString{intstr.FromInt32(8080), intstr.FromString("http")}},
}

var portNumbers = []int32{53, 80, 81, 443, 3000, 8000}

// svcShape is a churn Service as the generator sees it; the runner turns it into a Service.
type svcShape struct {
	Ports []portShape
	// Deployment is the Deployment the selector picks; "" makes a selector-less Service with a hand-made
	// EndpointSlice.
	Deployment      string
	Affinity        bool
	AffinityTimeout int32 // 0: the API default
	Local           bool
	InScope         bool
	Group           string
}

func (s svcShape) clone() svcShape {
	s.Ports = slices.Clone(s.Ports)
	return s
}

func (s svcShape) String() string {
	var ports []string
	for _, p := range s.Ports {
		ports = append(ports, fmt.Sprintf("%s:%d/%s->%s", p.Name, p.Port, p.Proto, p.Target.String()))
	}
	sel := "selector app=" + s.Deployment
	if s.Deployment == "" {
		sel = "no selector"
	}
	out := fmt.Sprintf("[%s] %s %s=%s", strings.Join(ports, ","), sel, churnGroupLabel, s.Group)
	if s.Affinity {
		out += fmt.Sprintf(" affinity=ClientIP(%ds)", s.AffinityTimeout)
	}
	if s.Local {
		out += " itp=Local"
	}
	if !s.InScope {
		out += " out-of-scope"
	}
	return out
}

// epShape is an endpoint of a hand-made EndpointSlice. Its address is in TEST-NET-1: the kernel holds it as
// a real server, but no step sends traffic to it.
type epShape struct {
	Addr                        string
	Ready, Serving, Terminating bool
	Node                        int // index into the driver's nodes; -1: no nodeName
}

// policyShape is a ServicePolicy selecting churn-group=Group.
type policyShape struct {
	Group     string
	Scheduler lbv1alpha1.Scheduler
}

// churnStep is one step of the sequence. Which fields matter depends on Kind.
type churnStep struct {
	Kind   stepKind
	Target string // the Service, Deployment or policy
	Change string // what an edit changes, for the log
	Node   int    // node index of agent and drift steps
	Pick   int    // which pod a readiness step picks, modulo the candidates
	// Service is the whole shape after a create or edit, Slice the hand-made slice's endpoints.
	Service  *svcShape
	Slice    []epShape
	Replicas int32
	Policy   *policyShape
}

func (s churnStep) String() string {
	switch {
	case s.Kind.drift() || s.Kind == stepRestartAgent:
		return fmt.Sprintf("%s node#%d", s.Kind, s.Node)
	case s.Kind == stepScale:
		return fmt.Sprintf("%s %s to %d", s.Kind, s.Target, s.Replicas)
	case s.Kind == stepFailReadiness || s.Kind == stepPassReadiness:
		return fmt.Sprintf("%s %s pick %d", s.Kind, s.Target, s.Pick)
	case s.Policy != nil:
		return fmt.Sprintf("%s %s %s=%s -s %s", s.Kind, s.Target, churnGroupLabel, s.Policy.Group, s.Policy.Scheduler)
	case s.Kind == stepDeletePolicy || s.Kind == stepDeleteService:
		return fmt.Sprintf("%s %s", s.Kind, s.Target)
	}
	out := fmt.Sprintf("%s %s", s.Kind, s.Target)
	if s.Change != "" {
		out += " (" + s.Change + ")"
	}
	if s.Service != nil {
		out += " " + s.Service.String()
	}
	if s.Slice != nil {
		out += fmt.Sprintf(" slice=%v", s.Slice)
	}
	return out
}

// churnModel is the generator's picture of the pool.
type churnModel struct {
	services map[string]svcShape
	replicas map[string]int32
	policies map[string]policyShape
	nodes    int
	next     int
}

// churnInitialReplicas is the size of every churn Deployment before the first step.
const churnInitialReplicas = 2

// generateChurn returns n steps for a cluster of nodes nodes, the same for the same seed.
func generateChurn(seed int64, n, nodes int) []churnStep {
	rnd := rand.New(rand.NewSource(seed)) //nolint:gosec // a replayable test sequence, not a secret
	m := &churnModel{services: map[string]svcShape{}, replicas: map[string]int32{}, policies: map[string]policyShape{}, nodes: nodes}
	for _, d := range churnDeployments {
		m.replicas[d] = churnInitialReplicas
	}
	steps := make([]churnStep, 0, n)
	for len(steps) < n {
		steps = append(steps, m.step(rnd))
	}
	return steps
}

// churnWeights are the relative odds of each kind, when it applies.
var churnWeights = []struct {
	kind   stepKind
	weight int
}{
	{stepCreateService, 10}, {stepEditService, 24}, {stepDeleteService, 4}, {stepEditSlice, 5},
	{stepScale, 10}, {stepFailReadiness, 6}, {stepPassReadiness, 6},
	{stepCreatePolicy, 5}, {stepConflictPolicy, 3}, {stepEditPolicy, 4}, {stepDeletePolicy, 3},
	{stepRestartAgent, 3}, {stepIPVSClear, 4}, {stepNftFlush, 3}, {stepKubeProxyFlush, 3},
}

func (m *churnModel) applies(k stepKind) bool {
	switch k {
	case stepCreateService:
		return len(m.services) < churnMaxServices
	case stepEditService, stepDeleteService:
		return len(m.services) > 0
	case stepEditSlice:
		return len(m.selectorless()) > 0
	case stepCreatePolicy:
		return len(m.policies) < churnMaxPolicies
	case stepConflictPolicy:
		return len(m.policies) > 0 && len(m.policies) < churnMaxPolicies
	case stepEditPolicy, stepDeletePolicy:
		return len(m.policies) > 0
	}
	return true
}

func (m *churnModel) selectorless() []string {
	var out []string
	for _, name := range sortedKeys(m.services) {
		if m.services[name].Deployment == "" {
			out = append(out, name)
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}

func pick[T any](rnd *rand.Rand, from []T) T { return from[rnd.Intn(len(from))] }

func (m *churnModel) step(rnd *rand.Rand) churnStep {
	total := 0
	for _, w := range churnWeights {
		if m.applies(w.kind) {
			total += w.weight
		}
	}
	r := rnd.Intn(total)
	var kind stepKind
	for _, w := range churnWeights {
		if !m.applies(w.kind) {
			continue
		}
		if r < w.weight {
			kind = w.kind
			break
		}
		r -= w.weight
	}

	s := churnStep{Kind: kind}
	switch kind {
	case stepCreateService:
		m.next++
		s.Target = fmt.Sprintf("s%d", m.next)
		shape := m.newShape(rnd)
		m.services[s.Target] = shape
		s.Service = ptrTo(shape.clone())
		if shape.Deployment == "" {
			s.Slice = m.newSlice(rnd)
		}
	case stepEditService:
		s.Target = pick(rnd, sortedKeys(m.services))
		shape := m.services[s.Target].clone()
		s.Change = m.edit(rnd, &shape)
		m.services[s.Target] = shape
		s.Service = ptrTo(shape.clone())
	case stepDeleteService:
		s.Target = pick(rnd, sortedKeys(m.services))
		delete(m.services, s.Target)
	case stepEditSlice:
		s.Target = pick(rnd, m.selectorless())
		s.Slice = m.newSlice(rnd)
	case stepScale:
		s.Target = pick(rnd, churnDeployments)
		s.Replicas = int32(rnd.Intn(churnMaxReplicas + 1))
		m.replicas[s.Target] = s.Replicas
	case stepFailReadiness, stepPassReadiness:
		s.Target = pick(rnd, churnDeployments)
		s.Pick = rnd.Intn(churnMaxReplicas)
	case stepCreatePolicy:
		m.next++
		s.Target = fmt.Sprintf("pol%d", m.next)
		s.Policy = &policyShape{Group: pick(rnd, churnGroups), Scheduler: pick(rnd, lbv1alpha1.Schedulers)}
		m.policies[s.Target] = *s.Policy
	case stepConflictPolicy:
		// A newer policy selecting what an existing one selects, with another scheduler: the older wins.
		rival := m.policies[pick(rnd, sortedKeys(m.policies))]
		m.next++
		s.Target = fmt.Sprintf("pol%d", m.next)
		s.Policy = &policyShape{Group: rival.Group, Scheduler: otherScheduler(rnd, rival.Scheduler)}
		m.policies[s.Target] = *s.Policy
	case stepEditPolicy:
		s.Target = pick(rnd, sortedKeys(m.policies))
		p := m.policies[s.Target]
		p.Scheduler = otherScheduler(rnd, p.Scheduler)
		m.policies[s.Target] = p
		s.Policy = &p
	case stepDeletePolicy:
		s.Target = pick(rnd, sortedKeys(m.policies))
		delete(m.policies, s.Target)
	default: // agent restart and drift: pick a node
		s.Node = rnd.Intn(m.nodes)
	}
	return s
}

func ptrTo[T any](v T) *T { return &v }

func otherScheduler(rnd *rand.Rand, not lbv1alpha1.Scheduler) lbv1alpha1.Scheduler {
	for {
		if s := pick(rnd, lbv1alpha1.Schedulers); s != not {
			return s
		}
	}
}

// newShape draws a Service of a random shape: one to three ports of the catalog (TCP, UDP or both on one
// number), numbered or named targets, sometimes ClientIP affinity, internalTrafficPolicy Local, or no
// selector.
func (m *churnModel) newShape(rnd *rand.Rand) svcShape {
	s := svcShape{InScope: true, Group: pick(rnd, churnGroups), Deployment: pick(rnd, churnDeployments)}
	if rnd.Intn(5) == 0 {
		s.Deployment = ""
	}
	nports := 1 + rnd.Intn(3)
	for i := 0; i < nports; i++ {
		addPort(rnd, &s)
	}
	if rnd.Intn(4) == 0 {
		s.Affinity, s.AffinityTimeout = true, pick(rnd, []int32{0, 60, 600})
	}
	s.Local = rnd.Intn(4) == 0
	return s
}

// addPort adds a catalog port the Service does not have yet, on a number free for its protocol.
func addPort(rnd *rand.Rand, s *svcShape) bool {
	var free []int
	for i, c := range portCatalog {
		if !slices.ContainsFunc(s.Ports, func(p portShape) bool { return p.Name == c.name }) {
			free = append(free, i)
		}
	}
	if len(free) == 0 {
		return false
	}
	c := portCatalog[pick(rnd, free)]
	p := portShape{Name: c.name, Proto: c.proto, Target: pick(rnd, c.targets)}
	p.Port = freePort(rnd, *s, c.proto, -1)
	s.Ports = append(s.Ports, p)
	return true
}

// freePort draws a port number no other port (but the one at index skip) of the Service uses with proto.
func freePort(rnd *rand.Rand, s svcShape, proto corev1.Protocol, skip int) int32 {
	for {
		n := pick(rnd, portNumbers)
		taken := false
		for i, p := range s.Ports {
			if i != skip && p.Proto == proto && p.Port == n {
				taken = true
			}
		}
		if !taken {
			return n
		}
	}
}

// edit changes one thing of a Service in place and says what.
func (m *churnModel) edit(rnd *rand.Rand, s *svcShape) string {
	type edit struct {
		name  string
		apply func() bool
	}
	edits := []edit{
		{"port", func() bool {
			i := rnd.Intn(len(s.Ports))
			s.Ports[i].Port = freePort(rnd, *s, s.Ports[i].Proto, i)
			return true
		}},
		{"targetPort", func() bool {
			i := rnd.Intn(len(s.Ports))
			for _, c := range portCatalog {
				if c.name == s.Ports[i].Name {
					s.Ports[i].Target = pick(rnd, c.targets)
				}
			}
			return true
		}},
		{"add-port", func() bool { return len(s.Ports) < 3 && addPort(rnd, s) }},
		{"remove-port", func() bool {
			if len(s.Ports) < 2 {
				return false
			}
			i := rnd.Intn(len(s.Ports))
			s.Ports = slices.Delete(s.Ports, i, i+1)
			return true
		}},
		{"sessionAffinity", func() bool {
			s.Affinity = !s.Affinity
			s.AffinityTimeout = 0
			if s.Affinity {
				s.AffinityTimeout = pick(rnd, []int32{0, 60, 600})
			}
			return true
		}},
		{"affinity-timeout", func() bool {
			if !s.Affinity {
				return false
			}
			s.AffinityTimeout = pick(rnd, []int32{30, 90, 1200})
			return true
		}},
		{"internalTrafficPolicy", func() bool { s.Local = !s.Local; return true }},
		{"scope-label", func() bool { s.InScope = !s.InScope; return true }},
		{"group-label", func() bool {
			s.Group = churnGroups[(slices.Index(churnGroups, s.Group)+1)%len(churnGroups)]
			return true
		}},
		{"selector", func() bool {
			if s.Deployment == "" {
				return false
			}
			others := slices.DeleteFunc(slices.Clone(churnDeployments), func(d string) bool { return d == s.Deployment })
			s.Deployment = pick(rnd, others)
			return true
		}},
	}
	for {
		e := pick(rnd, edits)
		if e.apply() {
			return e.name
		}
	}
}

// newSlice draws one to three endpoints for a hand-made slice: ready, serving-and-terminating, or not ready,
// on a node or on none.
func (m *churnModel) newSlice(rnd *rand.Rand) []epShape {
	n := 1 + rnd.Intn(3)
	out := make([]epShape, n)
	for i := range out {
		e := epShape{Addr: fmt.Sprintf("192.0.2.%d", 10+rnd.Intn(20)), Node: rnd.Intn(m.nodes+1) - 1}
		switch rnd.Intn(5) {
		case 0:
			e.Serving, e.Terminating = true, true
		case 1:
		default:
			e.Ready, e.Serving = true, true
		}
		out[i] = e
	}
	// One address once: the API allows duplicates across slices, not the point here.
	slices.SortFunc(out, func(a, b epShape) int { return strings.Compare(a.Addr, b.Addr) })
	return slices.CompactFunc(out, func(a, b epShape) bool { return a.Addr == b.Addr })
}
