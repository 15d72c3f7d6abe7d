//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
)

// registryImage is the local registry for the OLM path's bundle image.
const registryImage = "registry:2.8.3"

// startRegistry starts a local image registry for the OLM path (only), published on a free port of the host's
// loopback. `operator-sdk run bundle` reads the bundle image from the host, and OLM's unpack job pulls it on a
// node: both use the name 127.0.0.1:<port>/..., which connectRegistry maps to the registry container for the
// nodes' containerd.
func (c *cluster) startRegistry(ctx context.Context) error {
	if !c.cfg.OLM {
		return nil
	}
	c.registry = c.cfg.Cluster + "-registry"
	c.cmd.Run(ctx, nil, nil, c.cfg.Docker, "rm", "-f", c.registry) //nolint:errcheck // a leftover from an earlier run
	if _, err := c.cmd.Run(ctx, nil, nil, c.cfg.Docker, "run", "-d", "--name", c.registry,
		"-p", "127.0.0.1::5000", registryImage); err != nil {
		return err
	}
	out, err := c.cmd.Run(ctx, nil, nil, c.cfg.Docker, "port", c.registry, "5000/tcp")
	if err != nil {
		return err
	}
	// e.g. "127.0.0.1:32768" (one line per published address)
	c.registryHost = strings.TrimSpace(strings.SplitN(out, "\n", 2)[0])
	if !strings.HasPrefix(c.registryHost, "127.0.0.1:") {
		return fmt.Errorf("unexpected published address of %s: %q", c.registry, out)
	}
	return nil
}

// connectRegistry attaches the registry to the kind network and tells every node's containerd to pull
// 127.0.0.1:<port>/... from it over plain HTTP.
func (c *cluster) connectRegistry(ctx context.Context) error {
	out, err := c.cmd.Run(ctx, nil, nil, c.cfg.Docker, "inspect", "-f", "{{json .NetworkSettings.Networks}}", c.registry)
	if err != nil {
		return err
	}
	if !strings.Contains(out, `"`+kindNetwork+`"`) {
		if _, err := c.cmd.Run(ctx, nil, nil, c.cfg.Docker, "network", "connect", kindNetwork, c.registry); err != nil {
			return err
		}
	}
	nodes, err := c.cmd.Run(ctx, nil, nil, c.cfg.Kind, "get", "nodes", "--name", c.cfg.Cluster)
	if err != nil {
		return err
	}
	dir := "/etc/containerd/certs.d/" + c.registryHost
	hosts := fmt.Sprintf("[host.%q]\n", "http://"+c.registry+":5000")
	for _, n := range strings.Fields(nodes) {
		if _, err := c.cmd.Run(ctx, nil, strings.NewReader(hosts), c.cfg.Docker, "exec", "-i", n,
			"sh", "-c", "mkdir -p '"+dir+"' && cat > '"+dir+"/hosts.toml'"); err != nil {
			return err
		}
	}
	return nil
}
