package kubelet

import (
	"errors"
	"io/fs"
	"os"
	"path"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
)

// commandLine is the command and args a container runs, as a container runtime resolves them against the
// image: the container's command replaces the image's ENTRYPOINT and then drops its CMD; the container's args
// replace the CMD. Upstream's e2e pods mostly give args only (`netexec --http-port=80` for agnhost, whose
// ENTRYPOINT is /agnhost and CMD is pause).
func (m ImageMapping) commandLine(c *corev1.Container) (command, args []string) {
	if len(c.Command) > 0 {
		return c.Command, c.Args
	}
	if m.Entrypoint == "" {
		return nil, c.Args
	}
	args = c.Args
	if len(args) == 0 {
		args = m.Cmd
	}
	return []string{m.Entrypoint}, args
}

// linkEntrypoints makes each mapping's absolute entrypoint (/agnhost) a symlink to its binary in Dir when
// nothing is there: pods share the VM's root filesystem, and upstream's specs exec the entrypoint by its
// path in the image (`kubectl exec POD -- /agnhost connect ...`).
func linkEntrypoints(mappings []ImageMapping) error {
	for _, m := range mappings {
		if !path.IsAbs(m.Entrypoint) {
			continue
		}
		if _, err := os.Lstat(m.Entrypoint); err == nil {
			continue
		}
		// The other node's kubelet may win the race: an existing link is fine.
		err := os.Symlink(filepath.Join(m.Dir, path.Base(m.Entrypoint)), m.Entrypoint)
		if err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
	}
	return nil
}
