package ipvs

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
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
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	out := map[ServiceKey][]ObservedDestination{}
	line := 0
	var cur ServiceKey // invalid Address: skipping the real servers of a virtual server not reported
	for sc.Scan() {
		line++
		text := sc.Text()
		if line <= 3 {
			if line == 1 && !strings.HasPrefix(text, "IP Virtual Server") {
				return nil, fmt.Errorf("ipvs: /proc/net/ip_vs: unexpected header %q", text)
			}
			continue
		}
		f := strings.Fields(text)
		if len(f) == 0 {
			continue
		}
		if f[0] != "->" {
			cur = ServiceKey{}
			proto, ok := procProtocols[f[0]]
			if !ok || len(f) < 2 {
				continue // FWM, AH, ESP: not modelled
			}
			a, port, err := parseProcAddrPort(f[1])
			if err != nil {
				return nil, fmt.Errorf("ipvs: /proc/net/ip_vs line %d: %w", line, err)
			}
			cur = ServiceKey{Address: a, Port: port, Protocol: proto}
			if _, dup := out[cur]; !dup {
				out[cur] = []ObservedDestination{}
			}
			continue
		}
		if !cur.Address.IsValid() {
			continue
		}
		if len(f) < 6 {
			return nil, fmt.Errorf("ipvs: /proc/net/ip_vs line %d: short real server line %q", line, text)
		}
		a, port, err := parseProcAddrPort(f[1])
		if err != nil {
			return nil, fmt.Errorf("ipvs: /proc/net/ip_vs line %d: %w", line, err)
		}
		var n [3]int
		for i := range n {
			if n[i], err = strconv.Atoi(f[3+i]); err != nil {
				return nil, fmt.Errorf("ipvs: /proc/net/ip_vs line %d: %w", line, err)
			}
		}
		out[cur] = append(out[cur], ObservedDestination{
			Destination:      Destination{DestinationKey: DestinationKey{Address: a, Port: port}, Weight: n[0]},
			DestinationStats: DestinationStats{ActiveConnections: n[1], InactiveConnections: n[2]},
		})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("ipvs: /proc/net/ip_vs: %w", err)
	}
	if line == 0 {
		return nil, fmt.Errorf("ipvs: /proc/net/ip_vs: empty")
	}
	return out, nil
}

var procProtocols = map[string]Protocol{"TCP": TCP, "UDP": UDP, "SCTP": SCTP}

// parseProcAddrPort parses "0A600001:0050" (IPv4, hexadecimal in network order) or
// "[fd00:0000:...:0010]:0035".
func parseProcAddrPort(s string) (netip.Addr, uint16, error) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return netip.Addr{}, 0, fmt.Errorf("bad address %q", s)
	}
	port, err := strconv.ParseUint(s[i+1:], 16, 16)
	if err != nil {
		return netip.Addr{}, 0, fmt.Errorf("bad port in %q: %w", s, err)
	}
	host := s[:i]
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		a, err := netip.ParseAddr(host[1 : len(host)-1])
		if err != nil || !a.Is6() {
			return netip.Addr{}, 0, fmt.Errorf("bad address %q", s)
		}
		return a, uint16(port), nil
	}
	v, err := strconv.ParseUint(host, 16, 32)
	if err != nil || len(host) != 8 {
		return netip.Addr{}, 0, fmt.Errorf("bad address %q", s)
	}
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], uint32(v))
	return netip.AddrFrom4(b), uint16(port), nil
}
