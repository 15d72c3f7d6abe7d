package nftrules

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
)

// maxElemsPerBatch bounds one netlink batch: the whole batch is one sendmsg, which the kernel refuses
// (EMSGSIZE) beyond the socket's send buffer (about 200 KiB by default). 1024 IPv6 pairs are ~50 KiB.
const maxElemsPerBatch = 1024

// Table is the agent's nftables table; it implements ipvs.Rules. Methods are safe for concurrent use.
type Table struct {
	mu   sync.Mutex // one batch at a time: the connection buffers messages until Flush
	conn *nftables.Conn
	// reader serves Elements on sockets of its own (one per dump, closed after it), so that the audit's
	// read of every element never waits for, nor holds up, a Service's Update on conn.
	reader  *nftables.Conn
	table   *nftables.Table
	netnsFD int // 0: the caller's namespace
	pods    podMatch
	// own counts the table's committed transactions, base is the generation when the sets were last read
	// (generation.go); both guarded by mu.
	own  uint32
	base generationBaseline
}

var _ ipvs.Rules = (*Table)(nil)

// Option configures New.
type Option func(*options)

type options struct {
	netnsFD int
	pods    podMatch
}

// WithNetNS makes the table live in the network namespace the file descriptor refers to (e.g. from
// netns.Get or an open /var/run/netns/NAME), instead of the caller's.
func WithNetNS(fd int) Option { return func(o *options) { o.netnsFD = fd } }

// New opens one lasting netfilter netlink socket; it does not touch the ruleset until Ensure.
func New(opts ...Option) (*Table, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	connOpts := []nftables.ConnOption{nftables.AsLasting()}
	if o.netnsFD != 0 {
		connOpts = append(connOpts, nftables.WithNetNSFd(o.netnsFD))
	}
	conn, err := nftables.New(connOpts...)
	if err != nil {
		return nil, fmt.Errorf("nftrules: open netlink: %w", err)
	}
	reader, err := nftables.New(connOpts[1:]...) // not lasting: a socket per call
	if err != nil {
		_ = conn.CloseLasting()
		return nil, fmt.Errorf("nftrules: open netlink: %w", err)
	}
	return &Table{conn: conn, reader: reader, table: &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet},
		netnsFD: o.netnsFD, pods: o.pods}, nil
}

// Close closes the netlink socket. The table stays in the kernel.
func (t *Table) Close() error { return t.conn.CloseLasting() }

// Ensure creates the table, its sets and chains if missing, rewrites the pod CIDR sets and then the
// rules, and keeps the ClusterIP and endpoint elements. It takes two transactions, the table's skeleton
// then the rules (see rawrules.go), each atomic; the old rules stay in force until the second one replaces
// them. If the table cannot be repaired in place (a set of the same name with another type, left by an
// older version), Ensure replaces the whole table; its elements are then empty and the caller's next
// audit (Elements) refills them.
// Equivalent to: `nft -f` of Render's output without the ClusterIP and loop elements.
func (t *Table) Ensure(podCIDRs []netip.Prefix) error {
	v4, v6, err := splitRanges(podCIDRs)
	if err != nil {
		return err
	}
	rules, err := ruleMessages(t.pods)
	if err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.queueSkeleton(v4, v6, false)
	if err := t.conn.Flush(); err != nil {
		// Replacing the table empties its sets: not one of the table's own counted updates.
		t.uncounted()
		// Add, delete, add: the delete cannot fail for a missing table, and the kernel sees one transaction.
		t.queueSkeleton(v4, v6, true)
		if err2 := t.conn.Flush(); err2 != nil {
			return fmt.Errorf("nftrules: ensure table inet %s: %w (repairing in place: %w)", TableName, err2, err)
		}
	} else {
		// Repaired in place: the element sets kept what they held (every audit ensures the table first).
		t.committed(nil)
	}
	err = sendBatch(t.netnsFD, rules)
	t.committed(err)
	if err != nil {
		return fmt.Errorf("nftrules: program rules of inet %s: %w", TableName, err)
	}
	return nil
}

// queueSkeleton queues the table, its sets and chains, and the pod CIDR elements. Callers hold t.mu.
func (t *Table) queueSkeleton(v4, v6 []addrRange, recreate bool) {
	t.conn.AddTable(t.table)
	if recreate {
		t.conn.DelTable(t.table)
		t.conn.AddTable(t.table)
	}
	sets := map[string]*nftables.Set{}
	for _, d := range setDefs {
		s := d.set(t.table)
		// AddSet only fails on marshalling, which the fixed definitions never hit; Flush would report it.
		_ = t.conn.AddSet(s, nil)
		sets[d.name] = s
	}
	for _, d := range chainDefs {
		t.conn.AddChain(&nftables.Chain{Name: d.name, Table: t.table, Type: d.typ, Hooknum: d.hook, Priority: d.priority})
	}
	for name, ranges := range map[string][]addrRange{SetPodCIDRs4: v4, SetPodCIDRs6: v6} {
		t.conn.FlushSet(sets[name])
		if els := intervalElements(ranges); len(els) > 0 {
			_ = t.conn.SetAddElements(sets[name], els)
		}
	}
}

// Update removes, then adds, set elements, in batches of at most maxElemsPerBatch elements, each batch
// atomic. Removing an absent element is not an error: it is added and deleted in the same transaction
// (kernels before 6.3 have no "destroy element"). An endpoint is one (endpoint . endpoint) pair in the
// loop set whatever the number of Services it serves, so the caller removes it only when no Service uses
// it any more. Equivalent to: `nft add element inet ipvs-operator clusterips4 { VIP }`,
// `nft delete element ...`.
func (t *Table) Update(add, remove ipvs.RuleElements) error {
	ops, err := elementOps(add, remove)
	if err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for len(ops) > 0 {
		n := 0
		batch := ops
		for i, op := range ops {
			if n+len(op.elems) > maxElemsPerBatch && i > 0 {
				batch = ops[:i]
				break
			}
			n += len(op.elems)
		}
		ops = ops[len(batch):]
		for _, op := range batch {
			s := &nftables.Set{Table: t.table, Name: op.set}
			// Queueing only fails on marshalling errors, which Flush reports as well.
			_ = t.conn.SetAddElements(s, op.elems)
			if op.remove {
				_ = t.conn.SetDeleteElements(s, op.elems)
			}
		}
		err := t.conn.Flush()
		t.committed(err)
		if err != nil {
			if !t.exists() {
				err = fmt.Errorf("table missing (Ensure first): %w", unix.ENOENT)
			}
			return fmt.Errorf("nftrules: update elements of inet %s: %w", TableName, err)
		}
	}
	return nil
}

// setOp is one queued element change, already chunked.
type setOp struct {
	set    string
	remove bool
	elems  []nftables.SetElement
}

// elementOps validates and encodes an update: removals first, then additions, each split per set and in
// chunks of at most maxElemsPerBatch.
func elementOps(add, remove ipvs.RuleElements) ([]setOp, error) {
	var ops []setOp
	for _, step := range []struct {
		els    ipvs.RuleElements
		remove bool
	}{{remove, true}, {add, false}} {
		c4, c6, err := splitAddrs(step.els.ClusterIPs)
		if err != nil {
			return nil, err
		}
		e4, e6, err := splitAddrs(step.els.Endpoints)
		if err != nil {
			return nil, err
		}
		p4, p6, err := splitPorts(step.els.Ports)
		if err != nil {
			return nil, err
		}
		type setKeys struct {
			name string
			keys [][]byte
		}
		// An update too large for one batch is seen half-done: ClusterIPs are added before their ports and
		// removed after them, so a ClusterIP in the set never lacks its ports' filter (its new connections
		// are refused meanwhile, never passed to the node).
		ports := []setKeys{{SetPorts4, portKeys(p4)}, {SetPorts6, portKeys(p6)}}
		order := append([]setKeys{
			{SetClusterIPs4, addrKeys(c4, false)}, {SetClusterIPs6, addrKeys(c6, false)},
			{SetLoop4, addrKeys(e4, true)}, {SetLoop6, addrKeys(e6, true)},
		}, ports...)
		if step.remove {
			order = append(ports, order[:4]...)
		}
		for _, s := range order {
			els := make([]nftables.SetElement, 0, len(s.keys))
			for _, k := range s.keys {
				els = append(els, nftables.SetElement{Key: k})
			}
			for len(els) > 0 {
				n := min(len(els), maxElemsPerBatch)
				ops = append(ops, setOp{set: s.name, remove: step.remove, elems: els[:n]})
				els = els[n:]
			}
		}
	}
	return ops, nil
}

// addrKeys encodes addresses as set keys: the address, or (address . address) for the loop sets.
func addrKeys(addrs []netip.Addr, pair bool) [][]byte {
	out := make([][]byte, 0, len(addrs))
	for _, a := range addrs {
		key := a.AsSlice()
		if pair {
			key = append(key, key...)
		}
		out = append(out, key)
	}
	return out
}

// portKeys encodes virtual server keys as (address . inet_proto . inet_service) keys: in a concatenation
// every field takes a multiple of four bytes, the protocol's one byte and the port's two (network order)
// padded with zeros after them.
func portKeys(keys []ipvs.ServiceKey) [][]byte {
	out := make([][]byte, 0, len(keys))
	for _, k := range keys {
		key := k.Address.AsSlice()
		key = append(key, byte(k.Protocol), 0, 0, 0, byte(k.Port>>8), byte(k.Port), 0, 0)
		out = append(out, key)
	}
	return out
}

// parsePortKey is portKeys' inverse; ok is false for a key this agent would not have written.
func parsePortKey(key []byte) (k ipvs.ServiceKey, ok bool) {
	n := len(key) - 8
	if n != 4 && n != 16 {
		return k, false
	}
	a, _ := netip.AddrFromSlice(key[:n])
	t := key[n:]
	if t[1]|t[2]|t[3]|t[6]|t[7] != 0 {
		return k, false
	}
	k = ipvs.ServiceKey{Address: a, Protocol: ipvs.Protocol(t[0]), Port: uint16(t[4])<<8 | uint16(t[5])}
	return k, validProtocol(k.Protocol)
}

func validProtocol(p ipvs.Protocol) bool { return p == ipvs.TCP || p == ipvs.UDP || p == ipvs.SCTP }

// Elements reads back the ClusterIP, endpoint and port elements, each list sorted (IPv4 first). It runs
// beside Update (on sockets of its own): at 10,000 Services the sets hold some 70,000 elements and their
// dump was a fifth of an audit's time in the lab, which no Service's update should wait for. Each set is dumped
// on its own, so an Update that runs meanwhile may show in some sets and not in others: a caller that
// compares the result with its records must not trust the elements it updated during the call.
// Equivalent to: `nft list set inet ipvs-operator clusterips4` and the other element sets.
func (t *Table) Elements() (ipvs.RuleElements, error) {
	t.markElementsRead()
	var out ipvs.RuleElements
	for _, name := range []string{SetClusterIPs4, SetClusterIPs6, SetLoop4, SetLoop6, SetPorts4, SetPorts6} {
		els, err := t.reader.GetSetElements(&nftables.Set{Table: t.table, Name: name})
		if err != nil {
			t.mu.Lock()
			missing := !t.exists()
			t.mu.Unlock()
			if missing {
				err = fmt.Errorf("table missing (Ensure first): %w", unix.ENOENT)
			}
			return ipvs.RuleElements{}, fmt.Errorf("nftrules: list set inet %s %s: %w", TableName, name, err)
		}
		for _, e := range els {
			switch name {
			case SetClusterIPs4, SetClusterIPs6:
				if a, ok := netip.AddrFromSlice(e.Key); ok {
					out.ClusterIPs = append(out.ClusterIPs, a)
				}
			case SetPorts4, SetPorts6:
				if k, ok := parsePortKey(e.Key); ok {
					out.Ports = append(out.Ports, k)
				}
			default:
				// Only well-formed (ep . ep) pairs are ours to report.
				h := len(e.Key) / 2
				if a, ok := netip.AddrFromSlice(e.Key[:h]); ok && slices.Equal(e.Key[:h], e.Key[h:]) {
					out.Endpoints = append(out.Endpoints, a)
				}
			}
		}
	}
	slices.SortFunc(out.ClusterIPs, netip.Addr.Compare)
	slices.SortFunc(out.Endpoints, netip.Addr.Compare)
	slices.SortFunc(out.Ports, compareKeys)
	return out, nil
}

// Exists reports whether the table is in the kernel, with one lookup by name (no dump of the ruleset or
// of the table's elements). Equivalent to: `nft list table inet ipvs-operator >/dev/null`.
func (t *Table) Exists() (bool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, err := t.conn.ListTableOfFamily(TableName, nftables.TableFamilyINet)
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("nftrules: list table inet %s: %w", TableName, err)
	}
	return true, nil
}

// Delete removes the whole table; an absent table is not an error.
// Equivalent to: `nft delete table inet ipvs-operator`.
func (t *Table) Delete() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.uncounted()
	t.conn.DelTable(t.table)
	err := t.conn.Flush()
	if err != nil && (errors.Is(err, unix.ENOENT) || !t.exists()) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("nftrules: delete table inet %s: %w", TableName, err)
	}
	return nil
}

// exists reports whether the table is in the kernel; it explains errors that google/nftables returns
// without their errno. Callers hold t.mu.
func (t *Table) exists() bool {
	tables, err := t.conn.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return true // unknown: do not claim it is missing
	}
	for _, tb := range tables {
		if tb.Name == TableName {
			return true
		}
	}
	return false
}

func splitAddrs(addrs []netip.Addr) (v4, v6 []netip.Addr, err error) {
	for _, a := range addrs {
		switch {
		case !a.IsValid() || a.Is4In6() || a.Zone() != "":
			return nil, nil, fmt.Errorf("nftrules: invalid address %q: %w", a, unix.EINVAL)
		case a.Is4():
			v4 = append(v4, a)
		default:
			v6 = append(v6, a)
		}
	}
	slices.SortFunc(v4, netip.Addr.Compare)
	slices.SortFunc(v6, netip.Addr.Compare)
	return slices.Compact(v4), slices.Compact(v6), nil
}

// splitPorts validates virtual server keys and splits them by family, sorted and without duplicates.
func splitPorts(keys []ipvs.ServiceKey) (v4, v6 []ipvs.ServiceKey, err error) {
	for _, k := range keys {
		a := k.Address
		switch {
		case !a.IsValid() || a.Is4In6() || a.Zone() != "" || !validProtocol(k.Protocol):
			return nil, nil, fmt.Errorf("nftrules: invalid virtual server %q: %w", k, unix.EINVAL)
		case a.Is4():
			v4 = append(v4, k)
		default:
			v6 = append(v6, k)
		}
	}
	slices.SortFunc(v4, compareKeys)
	slices.SortFunc(v6, compareKeys)
	return slices.Compact(v4), slices.Compact(v6), nil
}

// compareKeys orders virtual server keys by address, port, then protocol.
func compareKeys(a, b ipvs.ServiceKey) int {
	if c := a.Address.Compare(b.Address); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Port, b.Port); c != 0 {
		return c
	}
	return cmp.Compare(a.Protocol, b.Protocol)
}
