//go:build lab

package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ipvs-operator/ipvs-operator/test/lab"
	"github.com/ipvs-operator/ipvs-operator/test/lab/labd"
	"github.com/ipvs-operator/ipvs-operator/test/lab/topology"
)

// KubeProxy is kube-proxy v1.37.1 (built by hack/build-kube.sh into bin/k8s) in one of its modes, run by
// hand in the node's network namespace with the lab's admin kubeconfig and its own configuration file
// (KubeProxyConfig): measured exactly as the agent is.
type KubeProxy struct {
	// Mode is "nftables", "ipvs" or "iptables" (the guest has the iptables and ipset programs and the
	// x_tables and ip_set modules those two need; its iptables is iptables-nft, which the harness's watch
	// reads over netlink).
	Mode string
	// Binary is kube-proxy on the host; Start copies it into the lab's share.
	Binary string
	// Legacy runs kube-proxy with iptables-legacy as its `iptables` (and ip6tables, and their -save and
	// -restore), as its image's wrapper picks on a node whose rules are in x_tables: links to the guest's
	// xtables-legacy-multi in the share, first on its PATH. Otherwise it runs the guest's iptables-nft.
	Legacy bool
}

// legacyBin is the share's directory of iptables-legacy links (see Legacy); legacyPATH is kube-proxy's PATH
// with it.
const (
	legacyBin  = "xtables-legacy"
	legacyPATH = "PATH=" + lab.GuestShare + "/" + legacyBin + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// legacyLinks makes the share's iptables-legacy links once per lab.
func legacyLinks(shareDir string) error {
	dir := filepath.Join(shareDir, legacyBin)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, n := range []string{"iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore"} {
		err := os.Symlink("/usr/sbin/xtables-legacy-multi", filepath.Join(dir, n))
		if err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
	}
	return nil
}

// env is kube-proxy's extra environment.
func (k KubeProxy) env(shareDir string) ([]string, error) {
	if !k.Legacy {
		return nil, nil
	}
	return []string{legacyPATH}, legacyLinks(shareDir)
}

// Name is "kube-proxy-<mode>".
func (k KubeProxy) Name() string { return "kube-proxy-" + k.Mode }

// Dataplane is where the mode programs Services.
func (k KubeProxy) Dataplane() Dataplane {
	switch k.Mode {
	case "ipvs":
		return DataplaneIPVS
	case "iptables":
		return DataplaneIPTables
	}
	return DataplaneNFTables
}

func (k KubeProxy) configPath(shareDir string) (host, guest string) {
	name := k.Name() + ".yaml"
	return filepath.Join(shareDir, shareBenchDir, name), lab.GuestShare + "/" + shareBenchDir + "/" + name
}

// Start writes the configuration, copies the binary into the share (once per lab) and runs kube-proxy in
// the background in the node's namespace. auditPeriod has no kube-proxy counterpart: its periodic full
// resync is an hour apart by design (proxyutil.FullSyncPeriod), its syncPeriod left at the default.
func (k KubeProxy) Start(ctx context.Context, l *lab.Lab, node string, _ time.Duration) (int, error) {
	data, err := KubeProxyConfig(KubeProxySettings{Mode: k.Mode, Node: node, Kubeconfig: lab.GuestKubeconfig, ClusterCIDR: topology.PodCIDR})
	if err != nil {
		return 0, err
	}
	host, guest := k.configPath(l.ShareDir())
	if err := os.MkdirAll(filepath.Dir(host), 0o755); err != nil {
		return 0, err
	}
	if err := os.WriteFile(host, data, 0o644); err != nil {
		return 0, err
	}
	if err := copyOnce(k.Binary, filepath.Join(l.ShareDir(), "bin", "kube-proxy")); err != nil {
		return 0, err
	}
	env, err := k.env(l.ShareDir())
	if err != nil {
		return 0, err
	}
	resp, err := l.Run(ctx, labd.ExecRequest{Netns: node, Background: true, Env: env,
		// -v=2 logs each sync and its time ("SyncProxyRules complete"): a few lines per sync.
		Argv:    []string{lab.GuestBin + "/kube-proxy", "--config=" + guest, "-v=2"},
		LogFile: lab.GuestLogs + "/bench-" + k.Name() + "-" + node + ".log"})
	if err != nil {
		return 0, err
	}
	if resp.Error != "" {
		return 0, fmt.Errorf("bench: starting %s: %s", k.Name(), resp.Error)
	}
	return resp.Pid, nil
}

// copyOnce copies src to dst unless dst exists.
func copyOnce(src, dst string) error {
	if _, err := os.Stat(dst); err == nil {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("bench: %w (hack/build-kube.sh kube-proxy builds it; make bench runs it)", err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst+".tmp", os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		_ = out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(dst+".tmp", dst)
}

// ReadyURL is "": kube-proxy's /healthz answers 200 from its start, before any sync ("healthy while
// starting up", pkg/proxy/healthcheck), so it tells nothing about readiness; the table shows n/a.
func (KubeProxy) ReadyURL() string { return "" }

// MetricsURL is kube-proxy's metrics port (plain HTTP; the harness's token is sent and ignored).
func (KubeProxy) MetricsURL() string {
	return fmt.Sprintf("http://127.0.0.1:%d/metrics", kubeProxyMetricsPort)
}

// fullSyncMetric is kube-proxy's histogram of full syncs, its counterpart of the agent's audits: the
// cold one, then one an hour (partial syncs apply each change). The ipvs mode has no partial syncs: every
// sync is full and observed in syncMetric only.
const (
	fullSyncMetric = "kubeproxy_sync_full_proxy_rules_duration_seconds"
	syncMetric     = "kubeproxy_sync_proxy_rules_duration_seconds"
)

// Audits reads kube-proxy's full syncs.
func (k KubeProxy) Audits(metrics string) (int, float64, bool) {
	if k.Mode == "ipvs" {
		return histogramText(metrics, syncMetric)
	}
	return histogramText(metrics, fullSyncMetric)
}

// Stop sends SIGTERM and waits for kube-proxy to end.
func (k KubeProxy) Stop(ctx context.Context, l *lab.Lab, pid int) error {
	return stopProcess(ctx, l, pid, k.Name())
}

// Cleanup runs `kube-proxy --cleanup`, which removes what every mode leaves; where its teardown of another
// mode's leftovers fails in the guest, success is checked on what this mode left: no `kube-proxy` nftables
// table (nftables mode), no virtual server and no kube-ipvs0 (ipvs mode), no KUBE-SERVICES or service chain
// in the nat table (iptables mode).
func (k KubeProxy) Cleanup(ctx context.Context, l *lab.Lab, node string) error {
	_, guest := k.configPath(l.ShareDir())
	env, err := k.env(l.ShareDir())
	if err != nil {
		return err
	}
	out, cleanupErr := "", error(nil)
	resp, err := l.Run(ctx, labd.ExecRequest{Netns: node, Env: env, Combined: true,
		Argv: []string{lab.GuestBin + "/kube-proxy", "--config=" + guest, "--cleanup"}})
	switch {
	case err != nil:
		cleanupErr = err
	case resp.Error != "" || resp.ExitCode != 0:
		out, cleanupErr = resp.Stdout, fmt.Errorf("exit status %d %s", resp.ExitCode, resp.Error)
	default:
		out = resp.Stdout
	}
	if k.Mode == "ipvs" {
		// Its iptables teardown fails in the guest (iptables-nft: CHAIN_DEL "Device or resource busy" on
		// KUBE-MARK-MASQ, seen at 1,000 Services) after it removed its IPVS state: what the next proxy
		// would meet in IPVS is checked instead, no virtual server left and no kube-ipvs0. Some of its
		// iptables chains may stay, which is why `make bench` runs this mode last.
		vs, err := l.ExecCombined(ctx, node, "ipvsadm", "-Ln")
		if err != nil {
			return fmt.Errorf("bench: ipvsadm -Ln: %w\n%s", err, vs)
		}
		links, err := l.ExecCombined(ctx, node, "ip", "-o", "link", "show")
		if err != nil {
			return fmt.Errorf("bench: ip link show: %w\n%s", err, links)
		}
		if strings.Contains(vs, "TCP ") || strings.Contains(vs, "UDP ") || strings.Contains(links, "kube-ipvs0") {
			return errors.Join(fmt.Errorf("bench: kube-proxy --cleanup left IPVS state:\n%s\n%s", vs, out), cleanupErr)
		}
		return nil
	}
	if k.Dataplane() == DataplaneIPTables {
		// As in ipvs mode, what this mode left is checked rather than --cleanup's exit status, which also
		// reports the other modes' teardown: no service chain left in the nat table.
		save := "iptables-save"
		if k.Legacy {
			save = "iptables-legacy-save"
		}
		nat, err := l.ExecCombined(ctx, node, save, "-t", "nat")
		if err != nil {
			return fmt.Errorf("bench: %s -t nat: %w\n%s", save, err, nat)
		}
		if strings.Contains(nat, ":KUBE-SERVICES") || strings.Contains(nat, ":KUBE-SVC-") {
			return errors.Join(fmt.Errorf("bench: kube-proxy --cleanup left its chains:\n%.2000s\n%s", nat, out), cleanupErr)
		}
		return nil
	}
	if k.Dataplane() != DataplaneNFTables {
		if cleanupErr != nil {
			return fmt.Errorf("bench: kube-proxy --cleanup: %w\n%s", cleanupErr, out)
		}
		return nil
	}
	tables, err := l.ExecCombined(ctx, node, "nft", "list", "tables")
	if err != nil {
		return fmt.Errorf("bench: nft list tables: %w\n%s", err, tables)
	}
	if strings.Contains(tables, " kube-proxy") {
		return errors.Join(fmt.Errorf("bench: kube-proxy --cleanup left its table:\n%s\n%s", tables, out), cleanupErr)
	}
	return nil
}
