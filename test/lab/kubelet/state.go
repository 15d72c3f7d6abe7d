package kubelet

import (
	"errors"
	"os"
	"path/filepath"
	"strings"

	"k8s.io/apimachinery/pkg/types"
)

// netnsRecords remember which pod network namespaces this kubelet made, and for which pod UID. Both nodes'
// kubelets name their namespaces in the same /var/run/netns, so a kubelet cleaning up after a restart must
// only touch its own. A record is written before the namespace is made and removed after it is gone.
type netnsRecords struct{ dir string }

func (r netnsRecords) path(name string) string { return filepath.Join(r.dir, name) }

func (r netnsRecords) Record(name string, uid types.UID) error {
	if err := os.MkdirAll(r.dir, 0o755); err != nil {
		return err
	}
	return writeFileAtomic(r.path(name), []byte(uid), 0o644)
}

func (r netnsRecords) Forget(name string) error {
	err := os.Remove(r.path(name))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// All returns every recorded namespace with its pod UID.
func (r netnsRecords) All() (map[string]types.UID, error) {
	entries, err := os.ReadDir(r.dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := map[string]types.UID{}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		b, err := os.ReadFile(r.path(e.Name()))
		if err != nil {
			continue
		}
		out[e.Name()] = types.UID(strings.TrimSpace(string(b)))
	}
	return out, nil
}
