package takeover

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/util/sets"
)

// This file reads and rewrites an iptables-legacy table as the kernel hands it over (IPT_SO_GET_ENTRIES) and
// takes it back (IPT_SO_SET_REPLACE): the whole table as one blob of entries, each a rule with its matches
// and its target. It is what libiptc (under `iptables-legacy -D`/`-X`) does, without the program, which the
// agent's image does not carry. Pure: the sockets are in legacy.go.
//
// A table's blob, in the layout of <linux/netfilter_ipv4/ip_tables.h> and <linux/netfilter/x_tables.h>:
//   - a built-in chain (PREROUTING...) starts at its hook's entry offset and ends with its policy rule (its
//     underflow);
//   - a user chain starts with an entry whose target is ERROR with the chain's name, then its rules, then a
//     RETURN;
//   - the blob ends with an ERROR entry named "ERROR";
//   - a jump is the standard target (empty name) with a verdict >= 0: the byte offset of the entry to go to,
//     the first rule of a user chain (its head's next entry). A goto is the same with IPT_F_GOTO set in the
//     rule's flags: both are treated alike here.
//
// Both families share it; only the size of the address part of an entry differs.

// xtLayout is the fixed part of an entry in one family.
type xtLayout struct {
	// entrySize is sizeof(struct ipt_entry) or sizeof(struct ip6t_entry).
	entrySize int
	// targetOffsetAt is where target_offset (u16, then next_offset u16, then comefrom u32) sits.
	targetOffsetAt int
}

var xtLayouts = map[Family]xtLayout{
	// struct ipt_ip is 84 bytes (addresses and masks 16, four interface names and masks 64, proto u16,
	// flags u8, invflags u8); nfcache u32; target_offset @88; counters (u64 x 2) @96.
	IPv4: {entrySize: 112, targetOffsetAt: 88},
	// struct ip6t_ip6 is 136 bytes (addresses and masks 64, interfaces 64, proto u16, tos u8, flags u8,
	// invflags u8, padding); nfcache u32; target_offset @140; counters @152.
	IPv6: {entrySize: 168, targetOffsetAt: 140},
}

const (
	// xtTargetHeader is struct xt_entry_target's header: target_size u16, name[29], revision u8.
	xtTargetHeader = 32
	xtNameLen      = 29
	// xtErrorTarget names user chain heads and the blob's end; xtStandardTarget is "".
	xtErrorTarget = "ERROR"
	// xtHooks is NF_INET_NUMHOOKS: PREROUTING, INPUT, FORWARD, OUTPUT, POSTROUTING.
	xtHooks = 5
)

var xtHookChains = [xtHooks]string{"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"}

// xtTable is a table as IPT_SO_GET_INFO and IPT_SO_GET_ENTRIES describe it.
type xtTable struct {
	Name       string
	ValidHooks uint32
	HookEntry  [xtHooks]uint32
	Underflow  [xtHooks]uint32
	// Entries is the blob; NumEntries the number of entries in it.
	Entries    []byte
	NumEntries uint32
}

// xtEntry is one parsed entry.
type xtEntry struct {
	off, size int
	// chain is the chain the entry belongs to (a user chain's head belongs to it).
	chain string
	// head is set on a user chain's ERROR entry; end on the blob's last entry.
	head, end bool
	// jump is set on a standard target whose verdict is an offset: verdictAt is where the verdict sits in
	// the entry, to its (old) target offset.
	jump      bool
	verdictAt int
	to        uint32
	// index is the rule's number in its chain (1-based, as `iptables -D CHAIN N`), 0 for heads.
	index int
}

// parse splits the blob into entries and assigns each to its chain.
func (t xtTable) parse(fam Family) ([]xtEntry, error) {
	lay, ok := xtLayouts[fam]
	if !ok {
		return nil, fmt.Errorf("xtables: no family %d", fam)
	}
	hookAt := map[uint32]string{}
	for h := range xtHooks {
		if t.ValidHooks&(1<<h) != 0 {
			hookAt[t.HookEntry[h]] = xtHookChains[h]
		}
	}
	var out []xtEntry
	chain := ""
	index := 0
	b := t.Entries
	for off := 0; off < len(b); {
		if off+lay.entrySize > len(b) {
			return nil, fmt.Errorf("xtables: %s: entry at %d runs past the table's %d bytes", t.Name, off, len(b))
		}
		tOff := int(binary.NativeEndian.Uint16(b[off+lay.targetOffsetAt:]))
		next := int(binary.NativeEndian.Uint16(b[off+lay.targetOffsetAt+2:]))
		if next < lay.entrySize || off+next > len(b) || tOff < lay.entrySize || tOff+xtTargetHeader > next {
			return nil, fmt.Errorf("xtables: %s: malformed entry at %d (target at %d, next at %d)", t.Name, off, tOff, next)
		}
		e := xtEntry{off: off, size: next}
		if name, ok := hookAt[uint32(off)]; ok {
			chain, index = name, 0
		}
		tgt := b[off+tOff : off+next]
		tname := strings.TrimRight(string(tgt[2:2+xtNameLen]), "\x00")
		switch {
		case tname == xtErrorTarget:
			data := strings.TrimRight(string(tgt[xtTargetHeader:]), "\x00")
			if data == xtErrorTarget {
				e.end = true
				chain = ""
			} else {
				e.head = true
				chain, index = data, -1
			}
		case tname == "" && len(tgt) >= xtTargetHeader+4:
			if v := int32(binary.NativeEndian.Uint32(tgt[xtTargetHeader:])); v >= 0 {
				e.jump, e.verdictAt, e.to = true, tOff+xtTargetHeader, uint32(v)
			}
		}
		index++
		e.chain, e.index = chain, index
		if e.head {
			e.index = 0
		}
		if chain == "" && !e.end {
			return nil, fmt.Errorf("xtables: %s: entry at %d is in no chain", t.Name, off)
		}
		out = append(out, e)
		off += next
	}
	if len(out) == 0 || !out[len(out)-1].end {
		return nil, fmt.Errorf("xtables: %s: no end entry", t.Name)
	}
	if uint32(len(out)) != t.NumEntries {
		return nil, fmt.Errorf("xtables: %s: %d entries parsed, %d announced", t.Name, len(out), t.NumEntries)
	}
	return out, nil
}

// chainStarts maps the offset of each user chain's first rule (what a jump targets) to the chain.
func chainStarts(es []xtEntry) map[uint32]string {
	m := map[uint32]string{}
	for _, e := range es {
		if e.head {
			m[uint32(e.off+e.size)] = e.chain
		}
	}
	return m
}

// xtRead lists the table's chains (built-in ones with a hook, then user chains) and the rules jumping to one
// of kube-proxy's chains from a chain that is not kube-proxy's.
func xtRead(t xtTable, fam Family) ([]Chain, []Jump, error) {
	es, err := t.parse(fam)
	if err != nil {
		return nil, nil, err
	}
	starts := chainStarts(es)
	var chains []Chain
	seen := sets.New[string]()
	var jumps []Jump
	for _, e := range es {
		if e.chain != "" && !seen.Has(e.chain) {
			seen.Insert(e.chain)
			chains = append(chains, Chain{Table: t.Name, Name: e.chain})
		}
		if !e.jump {
			continue
		}
		to, ok := starts[e.to]
		from := Chain{Table: t.Name, Name: e.chain}
		if ok && !isKubeProxyChain(from) && isKubeProxyChain(Chain{Table: t.Name, Name: to}) {
			jumps = append(jumps, Jump{From: from, To: to, Handle: uint64(e.index)})
		}
	}
	return chains, jumps, nil
}

// errChainInUse is returned when a rule that stays jumps to a chain to delete (the kernel's EBUSY of
// `iptables -X`).
var errChainInUse = errors.New("chain in use")

// xtRemove returns the table without chains and without the jumps (matched by chain and target, whatever
// their place) into them: every remaining entry moved up, every jump's offset, hook entry and underflow
// moved with it. A remaining rule that jumps to a removed chain is an error: nothing is changed then.
func xtRemove(t xtTable, fam Family, jumps []Jump, chains []Chain) (xtTable, error) {
	es, err := t.parse(fam)
	if err != nil {
		return t, err
	}
	lay := xtLayouts[fam]
	starts := chainStarts(es)
	gone := sets.New[string]()
	for _, c := range chains {
		if c.Table == t.Name {
			gone.Insert(c.Name)
		}
	}
	type jumpKey struct{ from, to string }
	dropJumps := sets.New[jumpKey]()
	for _, j := range jumps {
		if j.From.Table == t.Name {
			dropJumps.Insert(jumpKey{j.From.Name, j.To})
		}
	}
	keep := make([]bool, len(es))
	for i, e := range es {
		keep[i] = !gone.Has(e.chain)
		if keep[i] && e.jump {
			if to, ok := starts[e.to]; ok && gone.Has(to) {
				if !dropJumps.Has(jumpKey{e.chain, to}) {
					return t, fmt.Errorf("xtables: %s: rule %d of %s jumps to %s: %w", t.Name, e.index, e.chain, to, errChainInUse)
				}
				keep[i] = false
			}
		}
	}
	// newOff maps an old offset to the new offset of the first kept entry at or after it: where a jump, a
	// hook entry or an underflow lands once the entries before it moved up.
	newOffs := make([]uint32, len(es)+1)
	kept := 0
	pos := uint32(0)
	for i, e := range es {
		newOffs[i] = pos
		if keep[i] {
			pos += uint32(e.size)
			kept++
		}
	}
	size := pos
	newOffs[len(es)] = pos
	newOff := func(old uint32) (uint32, error) {
		i, found := slices.BinarySearchFunc(es, old, func(e xtEntry, o uint32) int { return e.off - int(o) })
		if !found {
			return 0, fmt.Errorf("xtables: %s: offset %d is not an entry's", t.Name, old)
		}
		for i < len(es) && !keep[i] {
			i++
		}
		return newOffs[i], nil
	}
	out := xtTable{Name: t.Name, ValidHooks: t.ValidHooks, NumEntries: uint32(kept), Entries: make([]byte, 0, size)}
	for h := range xtHooks {
		if t.ValidHooks&(1<<h) == 0 {
			continue
		}
		if out.HookEntry[h], err = newOff(t.HookEntry[h]); err != nil {
			return t, err
		}
		if out.Underflow[h], err = newOff(t.Underflow[h]); err != nil {
			return t, err
		}
	}
	for i, e := range es {
		if !keep[i] {
			continue
		}
		ent := slices.Clone(t.Entries[e.off : e.off+e.size])
		// comefrom is the kernel's own bookkeeping (hooks reaching the rule); it recomputes it.
		binary.NativeEndian.PutUint32(ent[lay.targetOffsetAt+4:], 0)
		if e.jump {
			to, err := newOff(e.to)
			if err != nil {
				return t, err
			}
			binary.NativeEndian.PutUint32(ent[e.verdictAt:], to)
		}
		out.Entries = append(out.Entries, ent...)
	}
	return out, nil
}
