package ipvs

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net/netip"
	"strconv"
)

// ParseProcTable reads the kernel's /proc/net/ip_vs: the real servers of every virtual server, by key.
// Firewall-mark virtual servers and protocols other than TCP, UDP and SCTP are skipped, with their real
// servers; a virtual server without real servers maps to an empty list. Only the real servers are taken from
// it: its service lines print the persistence timeout in jiffies, whose length depends on the kernel's
// configuration, so services are read over netlink.
//
// The format, as the kernel prints it (ip_vs_ctl.c, ip_vs_info_seq_show):
//
//	IP Virtual Server version 1.2.1 (size=4096)
//	Prot LocalAddress:Port Scheduler Flags
//	  -> RemoteAddress:Port Forward Weight ActiveConn InActConn
//	TCP  0A600001:0050 rr
//	  -> 0AF40105:1F90      Masq    1      0          0
//	UDP  [fd00:0000:0000:0000:0000:0000:0000:0010]:0035 rr
//	  -> [fd00:0244:0000:0000:0000:0000:0000:0005]:0035      Masq    1      0          0
func ParseProcTable(r io.Reader) (map[ServiceKey][]ObservedDestination, error) {
	// It works on the scanner's bytes, with no string or slice allocated per line: at 10,000 virtual
	// servers the table has 60,000 lines, read under the lab's emulated CPU.
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	out := map[ServiceKey][]ObservedDestination{}
	line := 0
	var cur ServiceKey // invalid Address: skipping the real servers of a virtual server not reported
	var f [8][]byte
	// Every real server goes into one slice; each virtual server gets its part (one allocation per
	// doubling, not per virtual server).
	var all []ObservedDestination
	from := 0
	done := func() {
		if cur.Address.IsValid() && from < len(all) {
			out[cur] = all[from:len(all):len(all)]
		}
		from = len(all)
	}
	for sc.Scan() {
		line++
		text := sc.Bytes()
		if line <= 3 {
			if line == 1 && !bytes.HasPrefix(text, []byte("IP Virtual Server")) {
				return nil, fmt.Errorf("ipvs: /proc/net/ip_vs: unexpected header %q", text)
			}
			continue
		}
		n := fields(text, f[:])
		if n == 0 {
			continue
		}
		if string(f[0]) != "->" {
			done()
			cur = ServiceKey{}
			proto, ok := procProtocol(f[0])
			if !ok || n < 2 {
				continue // FWM, AH, ESP: not modelled
			}
			a, port, err := parseProcAddrPort(f[1])
			if err != nil {
				return nil, fmt.Errorf("ipvs: /proc/net/ip_vs line %d: %w", line, err)
			}
			cur = ServiceKey{Address: a, Port: port, Protocol: proto}
			// A virtual server listed twice (the read overlapped a change to the table): the later wins.
			out[cur] = []ObservedDestination{}
			continue
		}
		if !cur.Address.IsValid() {
			continue
		}
		if n < 6 {
			return nil, fmt.Errorf("ipvs: /proc/net/ip_vs line %d: short real server line %q", line, text)
		}
		a, port, err := parseProcAddrPort(f[1])
		if err != nil {
			return nil, fmt.Errorf("ipvs: /proc/net/ip_vs line %d: %w", line, err)
		}
		var v [3]int
		for i := range v {
			if v[i], err = strconv.Atoi(string(f[3+i])); err != nil {
				return nil, fmt.Errorf("ipvs: /proc/net/ip_vs line %d: %w", line, err)
			}
		}
		all = append(all, ObservedDestination{
			Destination:      Destination{DestinationKey: DestinationKey{Address: a, Port: port}, Weight: v[0]},
			DestinationStats: DestinationStats{ActiveConnections: v[1], InactiveConnections: v[2]},
		})
	}
	done()
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("ipvs: /proc/net/ip_vs: %w", err)
	}
	if line == 0 {
		return nil, fmt.Errorf("ipvs: /proc/net/ip_vs: empty")
	}
	return out, nil
}

// fields splits b at spaces into f, as strings.Fields does, and returns how many it found (at most len(f)).
func fields(b []byte, f [][]byte) int {
	n := 0
	for i := 0; i < len(b) && n < len(f); {
		for i < len(b) && (b[i] == ' ' || b[i] == '\t') {
			i++
		}
		j := i
		for j < len(b) && b[j] != ' ' && b[j] != '\t' {
			j++
		}
		if j > i {
			f[n] = b[i:j]
			n++
		}
		i = j
	}
	return n
}

func procProtocol(b []byte) (Protocol, bool) {
	switch string(b) {
	case "TCP":
		return TCP, true
	case "UDP":
		return UDP, true
	case "SCTP":
		return SCTP, true
	}
	return 0, false
}

// parseProcAddrPort parses "0A600001:0050" (IPv4, hexadecimal in network order) or
// "[fd00:0000:...:0010]:0035".
func parseProcAddrPort(s []byte) (netip.Addr, uint16, error) {
	i := bytes.LastIndexByte(s, ':')
	if i < 0 {
		return netip.Addr{}, 0, fmt.Errorf("bad address %q", s)
	}
	port, ok := parseHex(s[i+1:], 4)
	if !ok {
		return netip.Addr{}, 0, fmt.Errorf("bad port in %q", s)
	}
	host := s[:i]
	if len(host) > 2 && host[0] == '[' && host[len(host)-1] == ']' {
		a, err := netip.ParseAddr(string(host[1 : len(host)-1]))
		if err != nil || !a.Is6() {
			return netip.Addr{}, 0, fmt.Errorf("bad address %q", s)
		}
		return a, uint16(port), nil
	}
	v, ok := parseHex(host, 8)
	if !ok || len(host) != 8 {
		return netip.Addr{}, 0, fmt.Errorf("bad address %q", s)
	}
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], uint32(v))
	return netip.AddrFrom4(b), uint16(port), nil
}

// parseHex parses 1 to digits hexadecimal digits.
func parseHex(b []byte, digits int) (uint64, bool) {
	if len(b) == 0 || len(b) > digits {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		switch {
		case c >= '0' && c <= '9':
			v = v<<4 | uint64(c-'0')
		case c >= 'a' && c <= 'f':
			v = v<<4 | uint64(c-'a'+10)
		case c >= 'A' && c <= 'F':
			v = v<<4 | uint64(c-'A'+10)
		default:
			return 0, false
		}
	}
	return v, true
}
