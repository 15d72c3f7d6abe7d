// Command benchvm is the scale harness's program inside the lab VM (see test/bench). It has three modes:
//
//	benchvm raw --services N --endpoints M --vip-base IP --dst-base IP --port P --target-port T
//	    programs N virtual servers x M real servers and N /32 VIPs on a dummy interface with one netlink
//	    handle each, in the network namespace it runs in, and prints the time as JSON: the limit a proxy
//	    is compared with.
//	benchvm watch --cmd FILE --out FILE
//	    follows commands appended to --cmd and appends "ID ok key=value..." to --out when each holds. It
//	    looks at the kernel from the node (the proxy's network namespace), never at the proxy.
//	benchvm conns [--duration D] [--timeout D] ADDR
//	    sends requests to the echo server(s) behind ADDR over a new TCP connection each, one after the other,
//	    for D, and prints each one's latency as JSON (conns.go): the data path as a pod sees it.
//
// Commands of watch (one a line, fields separated by spaces):
//
//	flip ID VIP PORT DST DPORT ACTIVE   real server DST:DPORT of VIP:PORT/TCP has weight > 0 (ACTIVE=1) or is
//	                                    absent or weight 0 (ACTIVE=0)
//	full ID PREFIX N M                  at least N TCP virtual servers in PREFIX, each with >= M real servers
//	                                    of weight > 0 (checked once a second, each server's real servers
//	                                    until it is seen complete: dumps hold the kernel's IPVS mutex)
//	nftflip ID VIP PORT DST DPORT ACTIVE  the same, for kube-proxy's nftables mode: DST:DPORT is a DNAT target
//	                                    of VIP:PORT/TCP in table `ip kube-proxy` (see nft.go)
//	nftfull ID PREFIX N M               the same as full, for kube-proxy's nftables mode
//	iptflip ID VIP PORT DST DPORT ACTIVE  the same, for kube-proxy's iptables mode (iptables-nft): DST:DPORT is
//	                                    the DNAT target of an endpoint chain of VIP:PORT/TCP's service chain
//	                                    in table `ip nat` (see ipt.go)
//	iptfull ID PREFIX N M               the same as full, for kube-proxy's iptables mode
//	get ID URL TOKEN FILE STATUS        GET URL (bearer TOKEN unless "-", TLS unverified) answers STATUS;
//	                                    the body goes to FILE unless "-" (retried every 200 ms)
//	proc ID PID                         CPU seconds (user+system, with children waited for) and peak RSS of PID
//	                                    and its live descendants
//
// Each answer ends with checks=N check_us=T: the checks made until the condition held and their mean time.
//
// A condition is a state, not an event: a command appended before the change it waits for cannot miss it.
package main

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/ipvs-operator/ipvs-operator/ipvs"
	"github.com/ipvs-operator/ipvs-operator/test/bench/linetail"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: benchvm raw|watch|conns [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "raw":
		err = raw(os.Args[2:])
	case "watch":
		err = watch(os.Args[2:])
	case "conns":
		err = conns(os.Args[2:])
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchvm:", err)
		os.Exit(1)
	}
}

// RawResult is what raw prints.
type RawResult struct {
	Services     int     `json:"services"`
	Destinations int     `json:"destinations"`
	Seconds      float64 `json:"seconds"`
	IPVSSeconds  float64 `json:"ipvsSeconds"`
	VIPSeconds   float64 `json:"vipSeconds"`
}

// VIP and DST are the i-th addresses of the harness's layout (see test/bench: the same arithmetic).
func nth(base netip.Addr, i int) netip.Addr {
	b := base.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += uint32(i)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func raw(args []string) error {
	fs := flag.NewFlagSet("raw", flag.ContinueOnError)
	n := fs.Int("services", 100, "virtual servers")
	m := fs.Int("endpoints", 5, "real servers per virtual server")
	vipBase := fs.String("vip-base", "10.96.64.1", "the first VIP")
	dstBase := fs.String("dst-base", "10.244.16.1", "the first real server")
	port := fs.Int("port", 80, "virtual server port")
	tport := fs.Int("target-port", 8080, "real server port")
	if err := fs.Parse(args); err != nil {
		return err
	}
	vb, err := netip.ParseAddr(*vipBase)
	if err != nil {
		return err
	}
	db, err := netip.ParseAddr(*dstBase)
	if err != nil {
		return err
	}
	// A fresh namespace has lo down, and NewDestination then fails with EINVAL.
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return err
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return err
	}
	h, err := ipvs.NewNetlink()
	if err != nil {
		return err
	}
	vips, err := ipvs.NewDummyVIPs("bench0")
	if err != nil {
		return err
	}
	if err := vips.EnsureInterface(); err != nil {
		return err
	}
	var res RawResult
	t0 := time.Now()
	var tIPVS, tVIP time.Duration
	for i := 0; i < *n; i++ {
		t := time.Now()
		k := ipvs.ServiceKey{Address: nth(vb, i), Port: uint16(*port), Protocol: ipvs.TCP}
		if err := h.AddService(ipvs.Service{ServiceKey: k, Scheduler: "rr"}); err != nil {
			return err
		}
		for j := 0; j < *m; j++ {
			d := ipvs.Destination{DestinationKey: ipvs.DestinationKey{Address: nth(db, i**m+j), Port: uint16(*tport)}, Weight: 1}
			if err := h.AddDestination(k, d); err != nil {
				return err
			}
			res.Destinations++
		}
		t1 := time.Now()
		tIPVS += t1.Sub(t)
		if err := vips.Bind(k.Address); err != nil {
			return err
		}
		tVIP += time.Since(t1)
		res.Services++
	}
	res.Seconds = time.Since(t0).Seconds()
	res.IPVSSeconds, res.VIPSeconds = tIPVS.Seconds(), tVIP.Seconds()
	return json.NewEncoder(os.Stdout).Encode(res)
}

type pending struct {
	id   string
	kind string
	f    []string
	next time.Time
	// complete are the virtual servers a "full" command saw complete: during a cold start they stay so,
	// and each check dumps only the others' real servers. (A full dump every second holds the kernel's
	// IPVS mutex long enough at scale to slow the proxy being measured.)
	complete map[ipvs.ServiceKey]bool
	// nftComplete is the same for nftfull and iptfull, by service chain.
	nftComplete map[string]bool
	// checks and spent count the checks made and their time: the answer reports them (what the watch
	// costs the node).
	checks int
	spent  time.Duration
	// checked is when the command was last checked: a flip is answered with the time since then (poll=),
	// the most the watcher's own polling added to its latency.
	checked time.Time
}

func watch(args []string) error {
	fs := flag.NewFlagSet("watch", flag.ContinueOnError)
	cmdPath := fs.String("cmd", "", "file of commands (appended by the host)")
	outPath := fs.String("out", "", "file of answers (appended here)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	out, err := os.OpenFile(*outPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	h, err := ipvs.NewNetlink()
	if err != nil {
		return err
	}
	httpc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // the agent's self-signed port in the lab
	}}
	nft, err := newNFTView()
	if err != nil {
		return err
	}
	ipt, err := newIPTView()
	if err != nil {
		return err
	}
	w := &watcher{h: h, nft: nft, ipt: ipt, httpc: httpc, out: out}
	commands := &linetail.Tail{Path: *cmdPath}
	var todo []*pending
	for {
		lines, err := commands.Lines()
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		for _, f := range lines {
			if len(f) < 2 {
				continue
			}
			todo = append(todo, &pending{kind: f[0], id: f[1], f: f[2:]})
		}
		now := time.Now()
		kept := todo[:0]
		for _, p := range todo {
			if now.Before(p.next) {
				kept = append(kept, p)
				continue
			}
			t0 := time.Now()
			done, answer, err := w.check(p)
			p.checks++
			p.spent += time.Since(t0)
			if err != nil {
				_, _ = fmt.Fprintf(out, "%s error error=%s\n", p.id, strconv.Quote(err.Error()))
				continue
			}
			if done && (p.kind == "flip" || p.kind == "nftflip" || p.kind == "iptflip") && !p.checked.IsZero() {
				answer = strings.TrimSpace(answer + " poll=" + time.Since(p.checked).String())
			}
			p.checked = time.Now()
			if done {
				// What watching cost: how many checks until the condition held, and their mean time.
				answer = strings.TrimSpace(fmt.Sprintf("%s checks=%d check_us=%d", answer, p.checks, p.spent.Microseconds()/int64(p.checks)))
				_, _ = fmt.Fprintf(out, "%s ok %s\n", p.id, answer)
				continue
			}
			kept = append(kept, p)
		}
		todo = kept
		time.Sleep(time.Millisecond)
	}
}

type watcher struct {
	h     ipvs.Interface
	nft   *nftView
	ipt   *iptView
	httpc *http.Client
	// lastProgress is the last line progress logged.
	lastProgress string
	out          io.Writer
}

func (w *watcher) check(p *pending) (bool, string, error) {
	switch p.kind {
	case "flip":
		return w.flip(p.f)
	case "full":
		p.next = time.Now().Add(time.Second)
		if p.complete == nil {
			p.complete = map[ipvs.ServiceKey]bool{}
		}
		return w.full(p.f, p.complete)
	case "nftflip":
		return w.nftFlip(p.f)
	case "nftfull":
		p.next = time.Now().Add(time.Second)
		if p.nftComplete == nil {
			p.nftComplete = map[string]bool{}
		}
		return w.nftFull(p.f, p.nftComplete)
	case "iptflip":
		return w.iptFlip(p.f)
	case "iptfull":
		p.next = time.Now().Add(time.Second)
		if p.nftComplete == nil {
			p.nftComplete = map[string]bool{}
		}
		return w.iptFull(p.f, p.nftComplete)
	case "get":
		// Each failed probe costs the proxy a log line: not too often.
		p.next = time.Now().Add(200 * time.Millisecond)
		return w.get(p.f)
	case "proc":
		return w.proc(p.f)
	}
	return false, "", fmt.Errorf("unknown command %q", p.kind)
}

func (w *watcher) flip(f []string) (bool, string, error) {
	if len(f) != 5 {
		return false, "", fmt.Errorf("flip wants VIP PORT DST DPORT ACTIVE, got %q", f)
	}
	vip, err := netip.ParseAddr(f[0])
	if err != nil {
		return false, "", err
	}
	port, _ := strconv.Atoi(f[1])
	dst, err := netip.ParseAddr(f[2])
	if err != nil {
		return false, "", err
	}
	dport, _ := strconv.Atoi(f[3])
	want := f[4] == "1"
	ds, err := w.h.Destinations(ipvs.ServiceKey{Address: vip, Port: uint16(port), Protocol: ipvs.TCP})
	if err != nil {
		if errors.Is(err, ipvs.ErrNotFound) {
			return !want, "", nil
		}
		return false, "", err
	}
	active := false
	for _, d := range ds {
		if d.Address == dst && int(d.Port) == dport && d.Weight > 0 {
			active = true
		}
	}
	return active == want, "", nil
}

func (w *watcher) full(f []string, complete map[ipvs.ServiceKey]bool) (bool, string, error) {
	if len(f) != 3 {
		return false, "", fmt.Errorf("full wants PREFIX N M, got %q", f)
	}
	prefix, err := netip.ParsePrefix(f[0])
	if err != nil {
		return false, "", err
	}
	n, _ := strconv.Atoi(f[1])
	m, _ := strconv.Atoi(f[2])
	svcs, err := w.h.Services()
	if err != nil {
		return false, "", err
	}
	var mine []ipvs.ServiceKey
	for _, s := range svcs {
		if s.Protocol == ipvs.TCP && prefix.Contains(s.Address) {
			mine = append(mine, s.ServiceKey)
		}
	}
	if len(mine) < n {
		return false, "", nil
	}
	for _, k := range mine {
		if complete[k] {
			continue
		}
		ds, err := w.h.Destinations(k)
		if err != nil {
			return false, "", nil //nolint:nilerr // it may be going away; look again
		}
		active := 0
		for _, d := range ds {
			if d.Weight > 0 {
				active++
			}
		}
		if active < m {
			return false, "", nil
		}
		complete[k] = true
	}
	return true, fmt.Sprintf("services=%d", len(mine)), nil
}

func (w *watcher) get(f []string) (bool, string, error) {
	if len(f) != 4 {
		return false, "", fmt.Errorf("get wants URL TOKEN FILE STATUS, got %q", f)
	}
	req, err := http.NewRequest(http.MethodGet, f[0], nil)
	if err != nil {
		return false, "", err
	}
	if f[1] != "-" {
		req.Header.Set("Authorization", "Bearer "+f[1])
	}
	resp, err := w.httpc.Do(req)
	if err != nil {
		return false, "", nil //nolint:nilerr // not listening yet
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || strconv.Itoa(resp.StatusCode) != f[3] {
		return false, "", nil //nolint:nilerr // not yet
	}
	if f[2] != "-" {
		if err := os.WriteFile(f[2], body, 0o644); err != nil {
			return false, "", err
		}
	}
	return true, "status=" + f[3], nil
}

// proc sums CPU time (with the children each waited for) and peak RSS (VmHWM) over PID and its live
// descendants. A short-lived child's own peak RSS is not seen.
func (w *watcher) proc(f []string) (bool, string, error) {
	if len(f) != 1 {
		return false, "", fmt.Errorf("proc wants PID, got %q", f)
	}
	root, err := strconv.Atoi(f[0])
	if err != nil {
		return false, "", err
	}
	pids := descendants(root)
	var ticks, hwmKB, rssKB int64
	for _, pid := range pids {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// Fields after the command name "(...)": state is field 3, utime 14, stime 15, cutime 16, cstime 17.
		s := string(stat)
		rest := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		// utime, stime, and cutime, cstime: the children it waited for (kube-proxy runs nft and iptables-restore
		// as short-lived children); a live child is summed as a descendant, an ended one only here.
		for _, k := range []int{11, 12, 13, 14} {
			t, _ := strconv.ParseInt(rest[k], 10, 64)
			ticks += t
		}
		status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		for _, l := range strings.Split(string(status), "\n") {
			if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				hwmKB += kb
			}
			if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				rssKB += kb
			}
		}
	}
	if len(pids) == 0 {
		return false, "", fmt.Errorf("no process %d", root)
	}
	// USER_HZ is 100 on Linux.
	return true, fmt.Sprintf("cpu=%.2f hwm_kb=%d rss_kb=%d procs=%d", float64(ticks)/100, hwmKB, rssKB, len(pids)), nil
}

func descendants(root int) []int {
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", root)); err != nil {
		return nil
	}
	parent := map[int]int{}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(d + "/stat")
		if err != nil {
			continue
		}
		s := string(stat)
		rest := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		ppid, _ := strconv.Atoi(rest[1])
		parent[pid] = ppid
	}
	out := []int{root}
	for pid := range parent {
		for p := parent[pid]; p > 1; p = parent[p] {
			if p == root {
				out = append(out, pid)
				break
			}
		}
	}
	return out
}
