package kubelet

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// configMapVolumeDir is where a pod's ConfigMap volume is written; containerMounts binds it.
func configMapVolumeDir(podDir, volume string) string {
	return filepath.Join(podDir, "volumes", volume)
}

// configMapFiles are the files of a ConfigMap volume, path -> content, as the kubelet lays them out: every
// key under its own name, or only the listed items under their paths. A missing key is an error unless the
// volume is optional.
func configMapFiles(src *corev1.ConfigMapVolumeSource, data map[string]string) (map[string]string, error) {
	optional := src.Optional != nil && *src.Optional
	files := map[string]string{}
	if len(src.Items) == 0 {
		for k, v := range data {
			files[k] = v
		}
		return files, nil
	}
	for _, it := range src.Items {
		v, ok := data[it.Key]
		if !ok {
			if optional {
				continue
			}
			return nil, fmt.Errorf("configmap %s has no key %q", src.Name, it.Key)
		}
		if filepath.IsAbs(it.Path) || strings.HasPrefix(filepath.Clean(it.Path), "..") {
			return nil, fmt.Errorf("configmap %s item path %q leaves the volume", src.Name, it.Path)
		}
		files[it.Path] = v
	}
	return files, nil
}

// writeConfigMapVolumes writes the pod's ConfigMap volumes into its directory, read once when a container
// starts (a running container does not see later edits; restart it to pick them up).
func (w *podWorker) writeConfigMapVolumes(ctx context.Context, pod *corev1.Pod) error {
	for _, v := range pod.Spec.Volumes {
		src := v.ConfigMap
		if src == nil {
			continue
		}
		data, err := w.k.envSource.ConfigMap(ctx, pod.Namespace, src.Name)
		if err != nil {
			if src.Optional != nil && *src.Optional {
				data = nil
			} else {
				return fmt.Errorf("configmap volume %s: %w", v.Name, err)
			}
		}
		files, err := configMapFiles(src, data)
		if err != nil {
			return fmt.Errorf("configmap volume %s: %w", v.Name, err)
		}
		dir := configMapVolumeDir(w.dir, v.Name)
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
		paths := make([]string, 0, len(files))
		for p := range files {
			paths = append(paths, p)
		}
		sort.Strings(paths)
		for _, p := range paths {
			if err := writeFileAtomic(filepath.Join(dir, p), []byte(files[p]), 0o644); err != nil {
				return err
			}
		}
		if len(paths) == 0 {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
		}
	}
	return nil
}
