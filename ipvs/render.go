package ipvs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Render prints virtual servers the way `ipvsadm -Sn` does, in the same order, so that a golden file or a
// lab test can compare the output of Render(Snapshot(kernel)) with the real tool byte for byte:
//
//	-A -t 10.96.0.10:80 -s rr -p 10800
//	-a -t 10.96.0.10:80 -r 10.244.1.2:8080 -m -w 1
//
// Every real server is printed as masquerading (-m), the only forwarding method this library programs.
// A list already in ipvsadm's order (as Snapshot and ParseSave of ipvsadm's output return) is printed as
// it is; see ipvsadmSort. The input is not modified.
func Render(vs []VirtualServer) string {
	sorted := sortedCopy(vs, true)
	var b strings.Builder
	for _, v := range sorted {
		b.WriteString("-A ")
		b.WriteString(v.ServiceKey.String())
		b.WriteString(" -s ")
		b.WriteString(v.Scheduler)
		if secs := persistenceSeconds(v.Persistence); secs > 0 {
			b.WriteString(" -p ")
			b.WriteString(strconv.FormatUint(uint64(secs), 10))
		}
		b.WriteByte('\n')
		for _, d := range v.Destinations {
			fmt.Fprintf(&b, "-a %s -r %s -m -w %d\n", v.ServiceKey, d.DestinationKey, d.Weight)
		}
	}
	return b.String()
}

// ParseSave parses `ipvsadm -Sn` output (the numeric form: host names are refused). Options this library
// does not model are skipped, with their value when they take one: the persistence netmask (-M), the
// persistence engine (--pe), scheduler flags (-b), one-packet scheduling (-o), thresholds (-x, -y), tunnel
// options, and the forwarding method (-m, -g, -i). Firewall-mark services (-f) and their real servers are
// skipped too, as Snapshot skips them. A virtual server without a scheduler (-s) or a real server line without
// its address (-r) is refused: ipvsadm never prints one. Virtual servers come back in the order of the text.
func ParseSave(text string) ([]VirtualServer, error) {
	var out []VirtualServer
	index := map[ServiceKey]int{}
	for n, line := range strings.Split(text, "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		l, err := parseSaveLine(fields)
		if err != nil {
			return nil, fmt.Errorf("ipvs: ipvsadm -Sn line %d %q: %w", n+1, line, err)
		}
		if l.fwmark {
			continue
		}
		switch fields[0] {
		case "-A", "--add-service":
			if l.svc.Scheduler == "" {
				// ipvsadm -Sn always prints one; without it Render would print a bare -s, and the kernel
				// refuses a virtual server without a scheduler.
				return nil, fmt.Errorf("ipvs: ipvsadm -Sn line %d: virtual server %s has no scheduler (-s)", n+1, l.svc.ServiceKey)
			}
			if _, dup := index[l.svc.ServiceKey]; dup {
				return nil, fmt.Errorf("ipvs: ipvsadm -Sn line %d: virtual server %s listed twice", n+1, l.svc.ServiceKey)
			}
			index[l.svc.ServiceKey] = len(out)
			out = append(out, VirtualServer{Service: l.svc})
		case "-a", "--add-server":
			if !l.haveDst {
				return nil, fmt.Errorf("ipvs: ipvsadm -Sn line %d: real server line without -r", n+1)
			}
			i, ok := index[l.svc.ServiceKey]
			if !ok {
				return nil, fmt.Errorf("ipvs: ipvsadm -Sn line %d: real server of unknown virtual server %s", n+1, l.svc.ServiceKey)
			}
			out[i].Destinations = append(out[i].Destinations, l.dst)
		default:
			return nil, fmt.Errorf("ipvs: ipvsadm -Sn line %d: unexpected command %q", n+1, fields[0])
		}
	}
	return out, nil
}

type saveLine struct {
	svc     Service
	dst     Destination
	haveDst bool
	fwmark  bool
}

func parseSaveLine(f []string) (saveLine, error) {
	var l saveLine
	haveKey := false
	next := func(i *int) (string, error) {
		if *i+1 >= len(f) {
			return "", fmt.Errorf("option %s needs a value", f[*i])
		}
		*i++
		return f[*i], nil
	}
	for i := 1; i < len(f); i++ {
		opt := f[i]
		switch opt {
		case "-t", "--tcp-service", "-u", "--udp-service", "--sctp-service":
			v, err := next(&i)
			if err != nil {
				return l, err
			}
			ap, err := netip.ParseAddrPort(v)
			if err != nil {
				return l, err
			}
			l.svc.ServiceKey = ServiceKey{Address: ap.Addr(), Port: ap.Port(), Protocol: protocolOfFlag(opt)}
			haveKey = true
		case "-f", "--fwmark-service":
			if _, err := next(&i); err != nil {
				return l, err
			}
			l.fwmark, haveKey = true, true
		case "-s", "--scheduler":
			v, err := next(&i)
			if err != nil {
				return l, err
			}
			l.svc.Scheduler = v
		case "-p", "--persistent":
			v, err := next(&i)
			if err != nil {
				return l, err
			}
			secs, err := strconv.ParseUint(v, 10, 32)
			if err != nil {
				return l, err
			}
			l.svc.Persistence = time.Duration(secs) * time.Second
		case "-r", "--real-server":
			v, err := next(&i)
			if err != nil {
				return l, err
			}
			ap, err := netip.ParseAddrPort(v)
			if err != nil {
				return l, err
			}
			l.dst.DestinationKey, l.haveDst = DestinationKey{Address: ap.Addr(), Port: ap.Port()}, true
		case "-w", "--weight":
			v, err := next(&i)
			if err != nil {
				return l, err
			}
			w, err := strconv.Atoi(v)
			if err != nil {
				return l, err
			}
			l.dst.Weight = w
		default:
			if !strings.HasPrefix(opt, "-") {
				return l, fmt.Errorf("unexpected argument %q", opt)
			}
			// An option we do not model; its value, if any, never starts with '-'.
			if i+1 < len(f) && !strings.HasPrefix(f[i+1], "-") {
				i++
			}
		}
	}
	if !haveKey {
		return l, errors.New("no virtual service address")
	}
	return l, nil
}

func protocolOfFlag(flag string) Protocol {
	switch flag {
	case "-u", "--udp-service":
		return UDP
	case "--sctp-service":
		return SCTP
	}
	return TCP
}

// Snapshot reads the whole table: every virtual server with its real servers, in ipvsadm's order. A
// virtual server deleted between the two reads is left out.
func Snapshot(i Interface) ([]VirtualServer, error) {
	svcs, err := i.Services()
	if err != nil {
		return nil, err
	}
	out := make([]VirtualServer, 0, len(svcs))
	for _, s := range svcs {
		dsts, err := i.Destinations(s.ServiceKey)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		v := VirtualServer{Service: s, Destinations: make([]Destination, 0, len(dsts))}
		for _, d := range dsts {
			v.Destinations = append(v.Destinations, d.Destination)
		}
		out = append(out, v)
	}
	return sortedCopy(out, false), nil
}

// persistenceSeconds is the kernel's whole-second persistence timeout; a positive fraction of a second
// rounds up, so persistence is never silently dropped.
func persistenceSeconds(d time.Duration) uint32 {
	if d <= 0 {
		return 0
	}
	return uint32((d + time.Second - 1) / time.Second)
}

// sortedCopy returns a deep copy of vs in the order ipvsadm prints: virtual servers by libipvs's
// ipvs_cmp_services, each one's real servers by ipvs_cmp_dests. With keepSorted, lists already in that
// order are kept (see ipvsadmSort).
func sortedCopy(vs []VirtualServer, keepSorted bool) []VirtualServer {
	out := make([]VirtualServer, len(vs))
	for i, v := range vs {
		out[i] = VirtualServer{Service: v.Service, Destinations: slices.Clone(v.Destinations)}
		ipvsadmSort(out[i].Destinations, cmpDests, keepSorted)
	}
	ipvsadmSort(out, func(a, b VirtualServer) int { return cmpServices(a.Service, b.Service) }, keepSorted)
	return out
}

// ipvsadmSort sorts v as ipvsadm does, from the order the kernel listed it in. With keepSorted it leaves
// alone a list whose neighbours all compare <= 0, which is what the sort produces: because libipvs's
// comparison is not transitive, sorting ipvsadm's own output again can reorder it (in about one random
// set of a dozen IPv4 addresses in seven), so Render(Snapshot(kernel)) and Render(ParseSave(ipvsadm -Sn))
// would no longer print what ipvsadm printed. Snapshot sorts the kernel's order without keepSorted, as
// ipvsadm does. On an order that is transitive for v, keepSorted changes nothing (the sort is stable).
func ipvsadmSort[T any](v []T, cmp func(a, b T) int, keepSorted bool) {
	if keepSorted && inIpvsadmOrder(v, cmp) {
		return
	}
	glibcMergeSort(v, cmp)
}

// inIpvsadmOrder reports whether every element compares <= 0 with the next. The merge sort's output always
// does: the merge emits a before b only when cmp(a, b) <= 0, or when cmp(b, a) > 0, and libipvs's
// subtraction is antisymmetric except at a distance of exactly 2^31, where both directions are negative.
func inIpvsadmOrder[T any](v []T, cmp func(a, b T) int) bool {
	for i := 1; i < len(v); i++ {
		if cmp(v[i-1], v[i]) > 0 {
			return false
		}
	}
	return true
}

// The comparators below reproduce libipvs (ipvsadm 1.31) exactly, including its quirk: it subtracts two
// unsigned 32-bit address words and returns the result as a C int, so addresses more than 2^31 apart in a
// word compare "backwards" (192.168.0.1 sorts before 10.96.0.10), and the order is not even transitive.
// That is why the sort is glibc's merge sort, the one qsort runs, rather than slices.SortFunc: with a
// non-transitive comparison, the algorithm decides the output.

// cmpServices is ipvs_cmp_services: fwmark (always 0 here), family, protocol, address, port.
func cmpServices(a, b Service) int {
	if r := int(family16(a.Address)) - int(family16(b.Address)); r != 0 {
		return r
	}
	if r := int(a.Protocol) - int(b.Protocol); r != 0 {
		return r
	}
	if r := cmpAddrWords(a.Address, b.Address); r != 0 {
		return r
	}
	return int(a.Port) - int(b.Port)
}

// cmpDests is ipvs_cmp_dests: address, then port.
func cmpDests(a, b Destination) int {
	if r := cmpAddrWords(a.Address, b.Address); r != 0 {
		return r
	}
	return int(a.Port) - int(b.Port)
}

// cmpAddrWords compares like libipvs: four words for IPv6 (chosen by the first operand's family), one for
// IPv4, each as int32(ntohl(x) - ntohl(y)).
func cmpAddrWords(a, b netip.Addr) int {
	words := 1
	if a.Is6() {
		words = 4
	}
	for i := 0; i < words; i++ {
		if r := int32(addrWord(a, i) - addrWord(b, i)); r != 0 {
			return int(r)
		}
	}
	return 0
}

// addrWord is the i-th 32-bit word of the kernel's union nf_inet_addr: an IPv4 address fills word 0 only.
func addrWord(a netip.Addr, i int) uint32 {
	if a.Is4() {
		if i > 0 {
			return 0
		}
		b := a.As4()
		return binary.BigEndian.Uint32(b[:])
	}
	b := a.As16()
	return binary.BigEndian.Uint32(b[4*i:])
}

// family16 orders like the kernel's address family numbers: AF_INET (2) before AF_INET6 (10).
func family16(a netip.Addr) uint16 {
	if a.Is4() {
		return 2
	}
	return 10
}

// glibcMergeSort is glibc's msort_with_tmp (what qsort runs on Debian 12's glibc 2.36): top-down, split at
// n/2, and the merge takes from the left half while cmp(left, right) <= 0.
func glibcMergeSort[T any](v []T, cmp func(a, b T) int) {
	if len(v) < 2 {
		return
	}
	msort(v, make([]T, len(v)), cmp)
}

func msort[T any](b, tmp []T, cmp func(a, b T) int) {
	n := len(b)
	if n <= 1 {
		return
	}
	n1 := n / 2
	b1, b2 := b[:n1], b[n1:]
	msort(b1, tmp, cmp)
	msort(b2, tmp, cmp)
	i, j, k := 0, 0, 0
	for i < len(b1) && j < len(b2) {
		if cmp(b1[i], b2[j]) <= 0 {
			tmp[k] = b1[i]
			i++
		} else {
			tmp[k] = b2[j]
			j++
		}
		k++
	}
	// The rest of the left half follows; the rest of the right half is already in place.
	k += copy(tmp[k:], b1[i:])
	copy(b, tmp[:k])
}
