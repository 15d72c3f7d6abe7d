//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"

	. "github.com/onsi/ginkgo/v2"
)

// commandError is a command that failed, with what it printed.
type commandError struct {
	Argv   []string
	Err    error
	Output string
}

func (e *commandError) Error() string {
	return fmt.Sprintf("%s: %v\n%s", strings.Join(e.Argv, " "), e.Err, strings.TrimSpace(e.Output))
}

func (e *commandError) Unwrap() error { return e.Err }

// run runs argv with extra environment variables and stdin (nil: none) and returns its combined output. The
// command line goes to the Ginkgo log; the output too when the command fails.
func run(ctx context.Context, env []string, stdin io.Reader, argv ...string) (string, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = stdin
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	fmt.Fprintf(GinkgoWriter, "+ %s\n", strings.Join(argv, " "))
	if err := cmd.Run(); err != nil {
		return out.String(), &commandError{Argv: argv, Err: err, Output: out.String()}
	}
	return out.String(), nil
}

// runStreaming runs a long command (docker build, kind create) with its output streamed to the Ginkgo log.
func runStreaming(ctx context.Context, argv ...string) error {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = GinkgoWriter, GinkgoWriter
	fmt.Fprintf(GinkgoWriter, "+ %s\n", strings.Join(argv, " "))
	if err := cmd.Run(); err != nil {
		return &commandError{Argv: argv, Err: err, Output: "(output above)"}
	}
	return nil
}
