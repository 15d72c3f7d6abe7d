package host

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Progress prints one "lab: ..." line.
func Progress(w io.Writer, format string, args ...any) {
	if w == nil {
		return
	}
	fmt.Fprintf(w, "lab: "+format+"\n", args...)
}

// Exists says whether p names a file (or anything else Stat finds).
func Exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// WriteFileAtomic writes data to path (mode 0644) through a temporary file in the same directory.
func WriteFileAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil { //nolint:gosec // lab state and caches, read by the lab only
		return err
	}
	return os.Rename(tmp, path)
}

// CopyFile copies src to dst (mode mode) through a temporary file, making dst's directory.
func CopyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	o, err := os.OpenFile(dst+".tmp", os.O_CREATE|os.O_TRUNC|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(o, in); err != nil {
		o.Close()
		return err
	}
	if err := o.Close(); err != nil {
		return err
	}
	return os.Rename(dst+".tmp", dst)
}
