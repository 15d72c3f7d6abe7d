package nftrules

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// The kernel numbers the committed nf_tables transactions of a network namespace (the ruleset generation:
// every commit, of any table by any program, adds one). The table counts the commits it makes itself, so
// it can tell, with one small request, that nothing but its own updates changed the ruleset since it last
// read its sets: the audit then need not read some 70,000 elements again (at 10,000 Services in the lab,
// that read was 40% of an audit's CPU and most of its garbage).

// generationBaseline is the ruleset generation and the table's own commit count at the start of the last
// Elements; valid is false until one, and after any commit the table could not count exactly.
type generationBaseline struct {
	valid bool
	gen   uint32
	own   uint32
}

// errNoGeneration: the kernel's answer carried no generation.
var errNoGeneration = errors.New("no NFTA_GEN_ID in the answer")

// generation asks the kernel for the ruleset generation of the table's network namespace.
// Equivalent to the first line of: `nft list ruleset -a` ... (`nft monitor` prints it as "# new generation").
func (t *Table) generation() (uint32, error) {
	conn, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: t.netnsFD})
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	replies, err := conn.Execute(netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETGEN), Flags: netlink.Request},
		Data:   []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, 0},
	})
	if err != nil {
		return 0, err
	}
	for _, r := range replies {
		if len(r.Data) < 4 {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(r.Data[4:])
		if err != nil {
			return 0, err
		}
		ad.ByteOrder = binary.BigEndian
		for ad.Next() {
			if ad.Type() == unix.NFTA_GEN_ID {
				return ad.Uint32(), nil
			}
		}
		if err := ad.Err(); err != nil {
			return 0, err
		}
	}
	return 0, errNoGeneration
}

// committed records the outcome of one of the table's own transactions. Callers hold t.mu.
func (t *Table) committed(err error) {
	if err != nil {
		// An error may come after the kernel committed (or the batch may have been split): uncountable.
		t.base.valid = false
		return
	}
	t.own++
}

// uncounted records a change the table cannot count, or one that changed its sets (Delete, an Ensure that
// replaced the table). Callers hold t.mu.
func (t *Table) uncounted() { t.base.valid = false }

// markElementsRead starts a read of the sets: the generation before it is the baseline of the next
// UnchangedSinceElements. Commits during the read count against it, so they only ever cause a read.
func (t *Table) markElementsRead() {
	t.mu.Lock()
	defer t.mu.Unlock()
	gen, err := t.generation()
	t.base = generationBaseline{valid: err == nil, gen: gen, own: t.own}
}

// UnchangedSinceElements reports whether every nf_tables commit in the namespace since the start of the last
// Elements was one of this table's own updates: then the sets hold what that read returned, changed only by
// those updates. False (and no error) when another program committed anything at all (to any table), or
// when the table made a change it could not count; the caller then reads the elements.
// Equivalent to comparing the "# new generation" numbers of `nft monitor` with the agent's own commits.
func (t *Table) UnchangedSinceElements() (bool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.base.valid {
		return false, nil
	}
	gen, err := t.generation()
	if err != nil {
		return false, fmt.Errorf("nftrules: ruleset generation: %w", err)
	}
	// Unsigned differences: both counters may wrap.
	if gen-t.base.gen != t.own-t.base.own {
		return false, nil
	}
	t.base = generationBaseline{valid: true, gen: gen, own: t.own}
	return true, nil
}
