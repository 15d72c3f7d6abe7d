package takeover

import (
	"encoding/binary"
	"errors"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// xtBuilder writes an IPv4 x_tables blob as the kernel hands it over: entries of struct ipt_entry with a
// standard target (a verdict) or an ERROR target (a user chain's head, the end).
type xtBuilder struct {
	b []byte
	// starts are the offsets of user chains' first rules, for jumps written before their chain.
	starts map[string]uint32
	// fix are the jumps to patch once every chain is written: entry verdict offset -> chain.
	fix map[int]string
}

const xtVerdictAccept, xtVerdictReturn = -2, -4

func (x *xtBuilder) entry(target string, data []byte) int {
	lay := xtLayouts[IPv4]
	tsize := (xtTargetHeader + len(data) + 7) &^ 7
	e := make([]byte, lay.entrySize+tsize)
	binary.NativeEndian.PutUint16(e[lay.targetOffsetAt:], uint16(lay.entrySize))
	binary.NativeEndian.PutUint16(e[lay.targetOffsetAt+2:], uint16(len(e)))
	binary.NativeEndian.PutUint32(e[lay.targetOffsetAt+4:], 0x2) // comefrom, as the kernel leaves it
	binary.NativeEndian.PutUint16(e[lay.entrySize:], uint16(tsize))
	copy(e[lay.entrySize+2:], target)
	copy(e[lay.entrySize+xtTargetHeader:], data)
	off := len(x.b)
	x.b = append(x.b, e...)
	return off
}

func (x *xtBuilder) verdict(v int32) int {
	d := make([]byte, 4)
	binary.NativeEndian.PutUint32(d, uint32(v))
	return x.entry("", d)
}

func (x *xtBuilder) jump(chain string) int {
	off := x.verdict(0)
	x.fix[off+xtLayouts[IPv4].entrySize+xtTargetHeader] = chain
	return off
}

func (x *xtBuilder) head(chain string) {
	x.entry(xtErrorTarget, append([]byte(chain), make([]byte, 30-len(chain))...))
	x.starts[chain] = uint32(len(x.b))
}

// table is the filter table: INPUT jumping to kube-proxy's KUBE-IPVS-FILTER and to kubelet's KUBE-FIREWALL,
// FORWARD jumping to KUBE-FORWARD, the three user chains, and (when inUse) KUBE-FIREWALL jumping to
// KUBE-IPVS-FILTER too.
func xtTestTable(t *testing.T, inUse bool) xtTable {
	t.Helper()
	x := &xtBuilder{starts: map[string]uint32{}, fix: map[int]string{}}
	tb := xtTable{Name: TableFilter, ValidHooks: 1<<1 | 1<<2 | 1<<3}
	n := 0
	count := func(int) { n++ }
	tb.HookEntry[1] = uint32(len(x.b))
	count(x.jump("KUBE-IPVS-FILTER"))
	count(x.jump("KUBE-FIREWALL"))
	tb.Underflow[1] = uint32(len(x.b))
	count(x.verdict(xtVerdictAccept))
	tb.HookEntry[2] = uint32(len(x.b))
	count(x.jump("KUBE-FORWARD"))
	tb.Underflow[2] = uint32(len(x.b))
	count(x.verdict(xtVerdictAccept))
	tb.HookEntry[3] = uint32(len(x.b))
	tb.Underflow[3] = uint32(len(x.b))
	count(x.verdict(xtVerdictAccept))
	for _, c := range []string{"KUBE-FIREWALL", "KUBE-FORWARD", "KUBE-IPVS-FILTER"} {
		x.head(c)
		n++
		if c == "KUBE-FIREWALL" && inUse {
			count(x.jump("KUBE-IPVS-FILTER"))
		}
		count(x.verdict(-1)) // DROP
		count(x.verdict(xtVerdictReturn))
	}
	count(x.entry(xtErrorTarget, append([]byte(xtErrorTarget), make([]byte, 25)...)))
	for at, chain := range x.fix {
		binary.NativeEndian.PutUint32(x.b[at:], x.starts[chain])
	}
	tb.Entries, tb.NumEntries = x.b, uint32(n)
	return tb
}

func TestXTReadAndRemove(t *testing.T) {
	tb := xtTestTable(t, false)
	chains, jumps, err := xtRead(tb, IPv4)
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, 0, len(chains))
	for _, c := range chains {
		names = append(names, c.Name)
	}
	if want := []string{"INPUT", "FORWARD", "OUTPUT", "KUBE-FIREWALL", "KUBE-FORWARD", "KUBE-IPVS-FILTER"}; !slices.Equal(names, want) {
		t.Errorf("chains %v, want %v", names, want)
	}
	wantJumps := []Jump{
		{From: Chain{TableFilter, "INPUT"}, To: "KUBE-IPVS-FILTER", Handle: 1},
		{From: Chain{TableFilter, "FORWARD"}, To: "KUBE-FORWARD", Handle: 1},
	}
	if d := cmp.Diff(wantJumps, jumps); d != "" {
		t.Errorf("jumps (-want +got):\n%s", d)
	}

	out, err := xtRemove(tb, IPv4, jumps, []Chain{{TableFilter, "KUBE-FORWARD"}, {TableFilter, "KUBE-IPVS-FILTER"}})
	if err != nil {
		t.Fatal(err)
	}
	// What is left: INPUT jumping to KUBE-FIREWALL (its offset moved), FORWARD and OUTPUT with their
	// policies only, KUBE-FIREWALL, the end.
	if out.NumEntries != 8 {
		t.Errorf("%d entries left, want 8", out.NumEntries)
	}
	es, err := out.parse(IPv4)
	if err != nil {
		t.Fatal(err)
	}
	starts := chainStarts(es)
	got := make([]string, 0, len(es))
	for _, e := range es {
		s := e.chain
		if e.jump {
			s += " -j " + starts[e.to]
		}
		if e.head {
			s += " (head)"
		}
		got = append(got, s)
	}
	want := []string{"INPUT -j KUBE-FIREWALL", "INPUT", "FORWARD", "OUTPUT", "KUBE-FIREWALL (head)", "KUBE-FIREWALL", "KUBE-FIREWALL", ""}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("entries (-want +got):\n%s", d)
	}
	// Hooks land on their chains' first kept rules (FORWARD's first rule went), underflows on their policies.
	wantHooks := [xtHooks]uint32{1: uint32(es[0].off), 2: uint32(es[2].off), 3: uint32(es[3].off)}
	wantUnder := [xtHooks]uint32{1: uint32(es[1].off), 2: uint32(es[2].off), 3: uint32(es[3].off)}
	if out.HookEntry != wantHooks || out.Underflow != wantUnder {
		t.Errorf("hook entries %v underflows %v, want %v %v", out.HookEntry, out.Underflow, wantHooks, wantUnder)
	}
	// Nothing of the input was changed.
	if d := cmp.Diff(xtTestTable(t, false), tb); d != "" {
		t.Errorf("the input table changed:\n%s", d)
	}
}

// TestXTRemoveRefusesAChainInUse: a rule that stays and jumps to a chain to delete (here kubelet's chain,
// written after the plan was made) fails the whole rewrite, as the kernel's EBUSY would; nothing changes.
func TestXTRemoveRefusesAChainInUse(t *testing.T) {
	tb := xtTestTable(t, true)
	jumps := []Jump{{From: Chain{TableFilter, "INPUT"}, To: "KUBE-IPVS-FILTER"}}
	_, err := xtRemove(tb, IPv4, jumps, []Chain{{TableFilter, "KUBE-IPVS-FILTER"}})
	if !errors.Is(err, errChainInUse) {
		t.Fatalf("err = %v, want errChainInUse", err)
	}
}

func TestXTParseRefusesGarbage(t *testing.T) {
	tb := xtTestTable(t, false)
	for name, mutate := range map[string]func(*xtTable){
		"truncated":         func(t *xtTable) { t.Entries = t.Entries[:len(t.Entries)-8] },
		"wrong entry count": func(t *xtTable) { t.NumEntries++ },
		"next offset 0":     func(t *xtTable) { binary.NativeEndian.PutUint16(t.Entries[xtLayouts[IPv4].targetOffsetAt+2:], 0) },
	} {
		t.Run(name, func(t *testing.T) {
			bad := tb
			bad.Entries = slices.Clone(tb.Entries)
			mutate(&bad)
			if _, err := bad.parse(IPv4); err == nil {
				t.Error("parsed")
			}
		})
	}
}
