package health

import (
	"container/heap"
	"context"
	"math/rand/v2"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/utils/clock"
)

// DefaultMaxInFlight bounds the probes running at once on a node when Options does not say.
const DefaultMaxInFlight = 64

// Options configure a Prober.
type Options struct {
	// Probe probes one target; nil means Probe (the real TCP/HTTP probe).
	Probe ProbeFunc
	// MaxInFlight bounds the probes running at once; 0 means DefaultMaxInFlight. When every slot is busy,
	// due probes wait: a slow node probes late rather than piling up connections.
	MaxInFlight int
	// OnChange is called, outside the Prober's lock, with the owners of a target whose verdict changed, so
	// that they are translated again. It must not block for long.
	OnChange func(owners []string)
	// OnProbe, if set, observes every probe's result and duration (metrics).
	OnProbe func(t Target, err error, took time.Duration)
	// Initial, if set, is the verdict a target new to the Prober starts with; nil means healthy (trust
	// readiness). The agent uses it to remember, across a restart, what the kernel says it had taken out.
	Initial func(Target) State
	Clock   clock.WithTicker
}

// Prober probes registered targets, each once per period however many owners (Services) registered it,
// with the first probe of a target at a random point of its first period and each next one a period later
// ±10%, so that targets registered together (an agent start, a policy edit) do not probe in lockstep.
type Prober struct {
	opts Options

	mu      sync.RWMutex
	targets map[Target]*entry
	owners  map[string]sets.Set[Target]
	queue   dueQueue
	wake    chan struct{}
}

type entry struct {
	Target
	owners sets.Set[string]
	state  State
	next   time.Time
	// index is the entry's place in the queue; -1 while its probe runs or once removed.
	index   int
	removed bool
}

// NewProber returns a Prober; Run starts its probes.
func NewProber(opts Options) *Prober {
	if opts.Probe == nil {
		opts.Probe = Probe
	}
	if opts.MaxInFlight <= 0 {
		opts.MaxInFlight = DefaultMaxInFlight
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	return &Prober{
		opts:    opts,
		targets: map[Target]*entry{},
		owners:  map[string]sets.Set[Target]{},
		wake:    make(chan struct{}, 1),
	}
}

// Set makes targets the whole set of targets owner needs probed (none: it needs nothing). A target new to
// the Prober starts healthy; one no owner needs any more is forgotten, with its verdict.
func (p *Prober) Set(owner string, targets []Target) {
	want := sets.New(targets...)
	p.mu.Lock()
	old := p.owners[owner]
	if old.Equal(want) {
		p.mu.Unlock()
		return
	}
	now := p.opts.Clock.Now()
	for t := range want {
		if old.Has(t) {
			continue
		}
		e := p.targets[t]
		if e == nil {
			e = &entry{Target: t, owners: sets.New[string](), next: now.Add(jitter(t.Period, 0, 1))}
			if p.opts.Initial != nil {
				e.state = p.opts.Initial(t)
			}
			p.targets[t] = e
			heap.Push(&p.queue, e)
		}
		e.owners.Insert(owner)
	}
	for t := range old {
		if want.Has(t) {
			continue
		}
		e := p.targets[t]
		e.owners.Delete(owner)
		if e.owners.Len() == 0 {
			e.removed = true
			if e.index >= 0 {
				heap.Remove(&p.queue, e.index)
			}
			delete(p.targets, t)
		}
	}
	if want.Len() == 0 {
		delete(p.owners, owner)
	} else {
		p.owners[owner] = want
	}
	p.mu.Unlock()
	p.poke()
}

// Unhealthy reports whether t is registered and has crossed its unhealthy threshold (View).
func (p *Prober) Unhealthy(t Target) bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	e := p.targets[t]
	return e != nil && e.state.Unhealthy
}

// Lookup returns whether t is registered and, if so, whether it is unhealthy.
func (p *Prober) Lookup(t Target) (unhealthy, registered bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	e := p.targets[t]
	return e != nil && e.state.Unhealthy, e != nil
}

// Counts returns how many targets are probed and how many of them are unhealthy.
func (p *Prober) Counts() (targets, unhealthy int) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	for _, e := range p.targets {
		if e.state.Unhealthy {
			unhealthy++
		}
	}
	return len(p.targets), unhealthy
}

// Run probes until ctx ends: one scheduling goroutine hands due targets to MaxInFlight workers.
func (p *Prober) Run(ctx context.Context) error {
	work := make(chan *entry)
	var wg sync.WaitGroup
	for range p.opts.MaxInFlight {
		wg.Go(func() {
			for e := range work {
				p.probe(ctx, e)
			}
		})
	}
	defer wg.Wait()
	defer close(work)

	timer := p.opts.Clock.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		p.mu.Lock()
		now := p.opts.Clock.Now()
		var due *entry
		wait := time.Hour
		if len(p.queue) > 0 {
			if first := p.queue[0]; first.next.After(now) {
				wait = first.next.Sub(now)
			} else {
				due = heap.Pop(&p.queue).(*entry)
			}
		}
		p.mu.Unlock()
		if due != nil {
			select {
			case work <- due:
			case <-ctx.Done():
				return nil
			}
			continue
		}
		if !timer.Stop() {
			select {
			case <-timer.C():
			default:
			}
		}
		timer.Reset(wait)
		select {
		case <-timer.C():
		case <-p.wake:
		case <-ctx.Done():
			return nil
		}
	}
}

// probe runs one probe of e and records it.
func (p *Prober) probe(ctx context.Context, e *entry) {
	start := p.opts.Clock.Now()
	err := p.opts.Probe(ctx, e.Target)
	took := p.opts.Clock.Since(start)
	if ctx.Err() != nil {
		return // shutting down: a cancelled probe says nothing about the target
	}
	if p.opts.OnProbe != nil {
		p.opts.OnProbe(e.Target, err, took)
	}
	var notify []string
	p.mu.Lock()
	if !e.removed {
		var changed bool
		e.state, changed = e.state.Observe(err == nil, e.UnhealthyThreshold, e.HealthyThreshold)
		if changed {
			notify = e.owners.UnsortedList()
		}
		e.next = start.Add(jitter(e.Period, 0.9, 1.1))
		heap.Push(&p.queue, e)
	}
	p.mu.Unlock()
	p.poke()
	if len(notify) > 0 && p.opts.OnChange != nil {
		p.opts.OnChange(notify)
	}
}

func (p *Prober) poke() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// jitter returns a random duration in [lo*d, hi*d).
func jitter(d time.Duration, lo, hi float64) time.Duration {
	return time.Duration(float64(d) * (lo + rand.Float64()*(hi-lo)))
}

// dueQueue is a min-heap of entries by next probe time.
type dueQueue []*entry

func (q dueQueue) Len() int           { return len(q) }
func (q dueQueue) Less(i, j int) bool { return q[i].next.Before(q[j].next) }
func (q dueQueue) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].index, q[j].index = i, j
}
func (q *dueQueue) Push(x any) {
	e := x.(*entry)
	e.index = len(*q)
	*q = append(*q, e)
}
func (q *dueQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	old[len(old)-1] = nil
	e.index = -1
	*q = old[:len(old)-1]
	return e
}
