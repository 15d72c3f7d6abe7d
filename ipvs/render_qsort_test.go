package ipvs

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// libipvsSort is libipvs's ipvs_cmp_dests (IPv4 part) run through the C library's qsort, as ipvsadm does.
const libipvsSort = `#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
typedef struct { uint32_t addr; uint16_t port; } dest;
static int cmp(const void *a, const void *b) {
	const dest *d1 = a, *d2 = b;
	int r = d1->addr - d2->addr;
	if (r != 0) return r;
	return d1->port - d2->port;
}
int main(void) {
	int n;
	while (scanf("%d", &n) == 1) {
		dest d[64];
		for (int i = 0; i < n; i++) { unsigned a, p; scanf("%u %u", &a, &p); d[i].addr = a; d[i].port = p; }
		qsort(d, n, sizeof(dest), cmp);
		for (int i = 0; i < n; i++) printf("%u %u ", d[i].addr, d[i].port);
		printf("\n");
	}
	return 0;
}
`

// TestSortMatchesGlibcQsort checks the merge-sort emulation against the real C library on random address
// sets whose comparisons are not transitive (addresses spread over the whole IPv4 space).
func TestSortMatchesGlibcQsort(t *testing.T) {
	cc, err := exec.LookPath("cc")
	if err != nil {
		t.Skip("no C compiler: cannot compare with the C library's qsort")
	}
	dir := t.TempDir()
	src, bin := filepath.Join(dir, "s.c"), filepath.Join(dir, "s")
	if err := os.WriteFile(src, []byte(libipvsSort), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(cc, "-O0", "-o", bin, src).CombinedOutput(); err != nil {
		t.Skipf("cc failed: %v\n%s", err, out)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var in strings.Builder
	cases := make([][]Destination, 0, 300)
	for range 300 {
		n := 2 + rng.IntN(40)
		ds := make([]Destination, n)
		fmt.Fprintf(&in, "%d", n)
		for i := range ds {
			a := rng.Uint32()
			if rng.IntN(4) == 0 && i > 0 { // some equal addresses, so ports decide
				a = addrWord(ds[i-1].Address, 0)
			}
			p := uint16(rng.IntN(4))
			ds[i] = Destination{DestinationKey: DestinationKey{Address: netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)}), Port: p}}
			fmt.Fprintf(&in, " %d %d", a, p)
		}
		in.WriteByte('\n')
		cases = append(cases, ds)
	}
	cmd := exec.Command(bin)
	cmd.Stdin = strings.NewReader(in.String())
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != len(cases) {
		t.Fatalf("got %d lines from C, want %d", len(lines), len(cases))
	}
	for i, ds := range cases {
		glibcMergeSort(ds, cmpDests)
		var got strings.Builder
		for _, d := range ds {
			fmt.Fprintf(&got, "%d %d ", addrWord(d.Address, 0), d.Port)
		}
		if strings.TrimSpace(got.String()) != strings.TrimSpace(lines[i]) {
			t.Fatalf("case %d: Go order\n%s\nC order\n%s", i, got.String(), lines[i])
		}
	}
}
