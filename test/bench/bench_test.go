//go:build lab

package bench

// The scale harness as a lab suite. Without BENCH_SERVICES it is the smoke run of `make test`: 100
// Services, a 10 s audit period, and it asserts that the table is complete and sane (never timings).
// `make bench` runs the full sizes:
//
//	BENCH_SERVICES=1000,10000 go test -tags lab -count=1 -timeout 300m ./test/bench/ -ginkgo.v
//
// Other settings: BENCH_ENDPOINTS (5), BENCH_FLIPS (200), BENCH_BURST (100), BENCH_AUDIT_PERIOD (1m, the
// agent's default; 10s in the smoke run), BENCH_IDLE (20s; 5s), BENCH_OUT (a file the tables are appended to),
// BENCH_PROXIES (the columns: agent, kube-proxy-nftables, kube-proxy-iptables, kube-proxy-ipvs; the agent alone by default;
// BENCH_PROXIES_<size> for one size),
// BENCH_DATAPATH (10s; 3s: how long requests run through the data path's ClusterIP, 0 skips it),
// BENCH_AGENT_ENV (KEY=VALUE pairs added to the agent's environment, e.g. GOMEMLIMIT=120MiB).
// Each size boots a lab of its own: the kernel and the API server start empty.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ipvs-operator/ipvs-operator/test/lab"
)

func TestBench(t *testing.T) {
	RegisterFailHandler(Fail)
	suite, reporter := GinkgoConfiguration()
	suite.Timeout = 5 * time.Hour
	RunSpecs(t, "scale harness (lab)", suite, reporter)
}

func envInt(name string, def int) int {
	if v := os.Getenv(name); v != "" {
		n, err := strconv.Atoi(v)
		Expect(err).NotTo(HaveOccurred(), name)
		return n
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	if v := os.Getenv(name); v != "" {
		d, err := time.ParseDuration(v)
		Expect(err).NotTo(HaveOccurred(), name)
		return d
	}
	return def
}

// proxies are the columns of the table, named by BENCH_PROXIES (default: the agent alone): "agent",
// "kube-proxy-nftables", "kube-proxy-iptables" and "kube-proxy-ipvs". With BENCH_PROFILE=1 the agent runs as its test binary and leaves a CPU and a
// heap profile (the agent serves no pprof endpoint).
// BENCH_PROXIES_<size> (e.g. BENCH_PROXIES_10000=agent) overrides it for one size: a kube-proxy mode that
// takes seconds a flip at 10,000 Services can stay in the smaller table only.
func proxies(root, profileDir string, size int) ([]Proxy, error) {
	names := os.Getenv(fmt.Sprintf("BENCH_PROXIES_%d", size))
	if names == "" {
		names = os.Getenv("BENCH_PROXIES")
	}
	if names == "" {
		names = "agent"
	}
	kubeBin := os.Getenv(lab.EnvKubeBin)
	if kubeBin == "" {
		kubeBin = filepath.Join(root, "bin", "k8s", lab.KubeVersion)
	}
	var ps []Proxy
	for _, n := range strings.Split(names, ",") {
		switch n = strings.TrimSpace(n); n {
		case "agent":
			ps = append(ps, Agent{ProfileDir: profileDir, Env: strings.Fields(os.Getenv("BENCH_AGENT_ENV"))})
		case "kube-proxy-nftables", "kube-proxy-iptables", "kube-proxy-ipvs":
			ps = append(ps, KubeProxy{Mode: strings.TrimPrefix(n, "kube-proxy-"), Binary: filepath.Join(kubeBin, "kube-proxy")})
		default:
			return nil, fmt.Errorf("BENCH_PROXIES: unknown proxy %q (agent, kube-proxy-nftables, kube-proxy-iptables, kube-proxy-ipvs)", n)
		}
	}
	return ps, nil
}

// buildProfiledAgent builds cmd/agent's test binary (tag benchprof) into the guest's bin directory.
func buildProfiledAgent(ctx context.Context, root string, l *lab.Lab) error {
	cmd := exec.CommandContext(ctx, "go", "test", "-c", "-tags", "benchprof", "-ldflags=-s -w",
		"-o", filepath.Join(l.ShareDir(), "bin", "agent.test"), "./cmd/agent")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go test -c ./cmd/agent: %w\n%s", err, out)
	}
	return nil
}

// writeFlipChart writes the chart of the single-flip latencies of every proxy at size n: next to BENCH_OUT
// when it is set (tables.txt -> tables-flips-10000.svg), else in the temporary directory.
func writeFlipChart(n int, results []*Result) (string, error) {
	path := filepath.Join(os.TempDir(), fmt.Sprintf("bench-flips-%d-%s.svg", n, time.Now().Format("150405")))
	if out := os.Getenv("BENCH_OUT"); out != "" {
		path = fmt.Sprintf("%s-flips-%d.svg", strings.TrimSuffix(out, filepath.Ext(out)), n)
	}
	series := make([]Series, len(results))
	for i, r := range results {
		series[i] = Series{Name: r.Proxy, Latencies: r.Flips}
	}
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	title := fmt.Sprintf("single endpoint flips at %d Services: API write to kernel state", n)
	if err := FlipChart(f, title, series); err != nil {
		_ = f.Close()
		return "", err
	}
	return path, f.Close()
}

var _ = Describe("the scale harness", func() {
	smoke := os.Getenv("BENCH_SERVICES") == ""
	sizes := []int{100}
	if !smoke {
		list := strings.Split(os.Getenv("BENCH_SERVICES"), ",")
		sizes = make([]int, 0, len(list))
		for _, s := range list {
			n, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil || n < 1 {
				panic("BENCH_SERVICES: a comma-separated list of sizes, got " + os.Getenv("BENCH_SERVICES"))
			}
			sizes = append(sizes, n)
		}
	}
	for _, n := range sizes {
		It(fmt.Sprintf("measures %d Services", n), func(ctx SpecContext) {
			tRun := time.Now()
			cfg := Config{
				Services: n, Endpoints: envInt("BENCH_ENDPOINTS", 5),
				Flips: envInt("BENCH_FLIPS", 200), FlipAudits: 3, Burst: envInt("BENCH_BURST", 100),
				AuditPeriod: envDuration("BENCH_AUDIT_PERIOD", time.Minute), Idle: envDuration("BENCH_IDLE", 20*time.Second),
				DataPath: envDuration("BENCH_DATAPATH", 10*time.Second),
				Node:     "node-a", Writers: 8, Log: GinkgoWriter,
			}
			if smoke {
				cfg.AuditPeriod, cfg.Idle = envDuration("BENCH_AUDIT_PERIOD", 10*time.Second), envDuration("BENCH_IDLE", 5*time.Second)
				cfg.DataPath = envDuration("BENCH_DATAPATH", 3*time.Second)
			}
			if cfg.Burst > n {
				cfg.Burst = n
			}
			root, err := lab.RepoRoot()
			Expect(err).NotTo(HaveOccurred())
			l, err := lab.Start(ctx, lab.Options{RepoRoot: root, Out: GinkgoWriter, Packages: []string{
				"./test/lab/cmd/labvm", "./cmd/agent", "./test/bench/cmd/benchvm"}})
			Expect(err).NotTo(HaveOccurred())
			DeferCleanup(func() {
				if CurrentSpecReport().Failed() {
					l.Keep()
				}
				Expect(l.Stop()).To(Succeed())
			})

			profileDir, hostProfileDir := "", ""
			if os.Getenv("BENCH_PROFILE") == "1" {
				Expect(buildProfiledAgent(ctx, root, l)).To(Succeed())
				profileDir = lab.GuestShare + "/" + shareBenchDir + "/profile"
				hostProfileDir = filepath.Join(l.ShareDir(), shareBenchDir, "profile")
				Expect(os.MkdirAll(hostProfileDir, 0o755)).To(Succeed())
			}
			h, err := Prepare(ctx, l, cfg)
			Expect(err).NotTo(HaveOccurred())
			ps, err := proxies(root, profileDir, n)
			Expect(err).NotTo(HaveOccurred())
			results := make([]*Result, 0, len(ps))
			names := make([]string, 0, len(ps))
			var runErr error
			for _, p := range ps {
				r, err := h.Run(ctx, p)
				if r != nil {
					results = append(results, r)
					names = append(names, p.Name())
				}
				if err != nil {
					// The table of what was measured is printed first.
					runErr = fmt.Errorf("%s (guest logs in %s): %w", p.Name(), l.ShareDir()+"/logs", err)
					break
				}
			}
			Expect(results).NotTo(BeEmpty(), "%v", runErr)
			var b strings.Builder
			Print(&b, fmt.Sprintf("bench: %d Services x %d endpoints on %s, audit period %s, in the lab VM (qemu/TCG, %s)",
				n, cfg.Endpoints, cfg.Node, cfg.AuditPeriod, time.Now().UTC().Format(time.DateOnly)), names, h.Table(results))
			chart, err := writeFlipChart(n, results)
			Expect(err).NotTo(HaveOccurred())
			fmt.Fprintf(&b, "flip-latency chart: %s\n", chart)
			fmt.Fprintf(&b, "run took %s (lab start %s)\n", time.Since(tRun).Round(time.Second), l.Timings.Total.Round(time.Second))
			GinkgoWriter.Print(b.String())
			AddReportEntry(fmt.Sprintf("table %d", n), b.String())
			if out := os.Getenv("BENCH_OUT"); out != "" {
				f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
				Expect(err).NotTo(HaveOccurred())
				_, err = f.WriteString(b.String() + "\n")
				Expect(err).NotTo(HaveOccurred())
				Expect(f.Close()).To(Succeed())
			}

			if hostProfileDir != "" {
				keep := filepath.Join(os.TempDir(), fmt.Sprintf("bench-profile-%d-%s", n, time.Now().Format("150405")))
				Expect(os.Rename(hostProfileDir, keep)).To(Succeed())
				for _, prof := range [][]string{{"cpu.prof"}, {"heap.prof", "-sample_index=inuse_space"}, {"mem.prof", "-sample_index=alloc_space"}} {
					args := append([]string{"tool", "pprof", "-top", "-nodecount=30"}, prof[1:]...)
					out, _ := exec.CommandContext(ctx, "go", append(args, filepath.Join(keep, prof[0]))...).CombinedOutput()
					GinkgoWriter.Printf("profile %s:\n%s\n", filepath.Join(keep, prof[0]), out)
				}
			}

			Expect(runErr).NotTo(HaveOccurred())
			// Complete and sane, never fast: timings depend on the machine.
			Expect(h.RawLoop.Services).To(Equal(n))
			Expect(h.RawLoop.Destinations).To(Equal(n * cfg.Endpoints))
			Expect(h.RawLoop.Seconds).To(BeNumerically(">", 0))
			if cfg.DataPath > 0 {
				Expect(h.DataPathLimit.Latencies).NotTo(BeEmpty())
				Expect(h.DataPathLimit.Errors).To(BeZero(), h.DataPathLimit.FirstError)
			}
			for i, r := range results {
				if ps[i].ReadyURL() != "" {
					Expect(r.ColdReady).To(BeNumerically(">", 0), r.Proxy)
				}
				Expect(r.ColdFull).To(BeNumerically(">", 0), r.Proxy)
				Expect(r.Flips).To(HaveLen(cfg.Flips), r.Proxy)
				Expect(r.FlipSpan).To(BeNumerically(">=", time.Duration(cfg.FlipAudits)*cfg.AuditPeriod), r.Proxy)
				Expect(percentile(r.Flips, 50)).To(BeNumerically(">", 0), r.Proxy)
				Expect(r.Burst).To(HaveLen(cfg.Burst), r.Proxy)
				Expect(r.BurstAll).To(BeNumerically(">=", percentile(r.Burst, 100)-time.Second), r.Proxy)
				Expect(r.CPU).To(BeNumerically(">", 0), r.Proxy)
				if cfg.DataPath > 0 {
					// Every request through the ClusterIP is answered: the proxy serves it, not only programs it.
					Expect(r.DataPath.Latencies).NotTo(BeEmpty(), r.Proxy)
					Expect(r.DataPath.Errors).To(BeZero(), "%s: %s", r.Proxy, r.DataPath.FirstError)
				}
				Expect(r.CPU).To(BeNumerically(">=", r.ColdCPU), r.Proxy)
				Expect(r.PeakRSS).To(BeNumerically(">", 1<<20), r.Proxy)
				Expect(r.AuditsOK).To(BeTrue(), r.Proxy)
				Expect(r.AuditSeconds).To(BeNumerically(">", 0), r.Proxy)
				switch ps[i].(type) {
				case Agent:
					// The flips spanned FlipAudits periods: at least that many audits ran, minus one at either end.
					Expect(r.Audits).To(BeNumerically(">=", cfg.FlipAudits-1), r.Proxy)
				case KubeProxy:
					// Its cold full sync; the next one is an hour later.
					Expect(r.Audits).To(BeNumerically(">=", 1), r.Proxy)
				}
			}
		})
	}
})
