package host

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
	"golang.org/x/sys/unix"
)

// ModuleSyscalls are the two system calls that load a kernel module. Tests inject a fake; the zero Loader
// uses the real ones.
type ModuleSyscalls interface {
	// FinitModule loads the module in f. Equivalent to: finit_module(2).
	FinitModule(f *os.File, params string, flags int) error
	// InitModule loads an uncompressed module image. Equivalent to: init_module(2).
	InitModule(image []byte, params string) error
}

type kernelSyscalls struct{}

func (kernelSyscalls) FinitModule(f *os.File, params string, flags int) error {
	return unix.FinitModule(int(f.Fd()), params, flags)
}

func (kernelSyscalls) InitModule(image []byte, params string) error {
	return unix.InitModule(image, params)
}

// maxModuleSize bounds a decompressed module: the largest in-tree modules are tens of MiB; anything far
// beyond is a corrupt or hostile file, not a module.
const maxModuleSize = 512 << 20

// compression is how a module file is compressed, from its name as depmod lists it.
func compression(path string) string {
	for _, ext := range []string{".xz", ".zst", ".gz"} {
		if strings.HasSuffix(path, ".ko"+ext) {
			return ext
		}
	}
	return ""
}

// insertFile loads one module file. An uncompressed module goes to finit_module. A compressed one goes to
// finit_module with MODULE_INIT_COMPRESSED_FILE first, which kernels since 5.17 built with
// CONFIG_MODULE_DECOMPRESS take (decompressing in the kernel, for the formats it was built with); older
// kernels refuse the flag with EINVAL, kernels built without decompression with EOPNOTSUPP, and a kernel
// built for another format with EINVAL: then the module is decompressed here and handed to init_module.
// It returns how the module went in, for the log.
func (l *Loader) insertFile(path, params string) (how string, err error) {
	sys := l.Syscalls
	if sys == nil {
		sys = kernelSyscalls{}
	}
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	ext := compression(path)
	if ext == "" {
		return "finit_module", sys.FinitModule(f, params, 0)
	}
	if !l.noKernelDecompress {
		err := sys.FinitModule(f, params, unix.MODULE_INIT_COMPRESSED_FILE)
		if !kernelCannotDecompress(err) {
			return "finit_module, decompressed by the kernel", err
		}
		// Said once per Loader: the same kernel answers the same for every module of this format.
		l.noKernelDecompress = true
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return "", err
		}
	}
	image, err := decompress(f, ext)
	if err != nil {
		return "", fmt.Errorf("decompressing %s: %w", filepath.Base(path), err)
	}
	return "init_module, decompressed by the agent", sys.InitModule(image, params)
}

// kernelCannotDecompress reports whether finit_module refused MODULE_INIT_COMPRESSED_FILE itself rather
// than the module: EINVAL (an unknown flag before 5.17, or a format the kernel was not built to
// decompress), EOPNOTSUPP (no CONFIG_MODULE_DECOMPRESS), ENOSYS (no finit_module at all).
func kernelCannotDecompress(err error) bool {
	return errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS)
}

// decompress reads a whole compressed module. Equivalent to: `xz -dc` / `zstd -dc` / `gzip -dc`.
func decompress(r io.Reader, ext string) ([]byte, error) {
	var dr io.Reader
	switch ext {
	case ".xz":
		x, err := xz.NewReader(r)
		if err != nil {
			return nil, err
		}
		dr = x
	case ".zst":
		z, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, err
		}
		defer z.Close()
		dr = z
	case ".gz":
		g, err := gzip.NewReader(r)
		if err != nil {
			return nil, err
		}
		defer g.Close()
		dr = g
	default:
		return nil, fmt.Errorf("unknown module compression %q", ext)
	}
	var b bytes.Buffer
	n, err := io.Copy(&b, io.LimitReader(dr, maxModuleSize+1))
	if err != nil {
		return nil, err
	}
	if n > maxModuleSize {
		return nil, fmt.Errorf("more than %d MiB decompressed: not a module", maxModuleSize>>20)
	}
	if !bytes.HasPrefix(b.Bytes(), []byte("\x7fELF")) {
		return nil, fmt.Errorf("decompressed data is not an ELF module")
	}
	return b.Bytes(), nil
}
