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
)

// commandRunner is the suite's only way to run docker, kind, kubectl, kustomize and operator-sdk. The suite
// uses execRunner; the dry run (dryrun_test.go, `make test-e2e-dryrun`) uses a fake that records the command
// lines and answers them, so that every command setUp and tearDown would run is checked without a Docker
// engine.
type commandRunner interface {
	// Run runs argv with extra environment variables and stdin (nil: none) and returns its combined output.
	Run(ctx context.Context, env []string, stdin io.Reader, argv ...string) (string, error)
	// Stream runs a long command (docker build, kind create) with its output streamed to the log.
	Stream(ctx context.Context, argv ...string) error
	// LookPath finds a program as exec.LookPath does.
	LookPath(file string) (string, error)
}

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

// execRunner runs commands for real; each command line goes to log, its output too when it fails.
type execRunner struct{ log io.Writer }

var _ commandRunner = execRunner{}

func (r execRunner) Run(ctx context.Context, env []string, stdin io.Reader, argv ...string) (string, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = stdin
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	fmt.Fprintf(r.log, "+ %s\n", strings.Join(argv, " "))
	if err := cmd.Run(); err != nil {
		return out.String(), &commandError{Argv: argv, Err: err, Output: out.String()}
	}
	return out.String(), nil
}

func (r execRunner) Stream(ctx context.Context, argv ...string) error {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = r.log, r.log
	fmt.Fprintf(r.log, "+ %s\n", strings.Join(argv, " "))
	if err := cmd.Run(); err != nil {
		return &commandError{Argv: argv, Err: err, Output: "(output above)"}
	}
	return nil
}

func (execRunner) LookPath(file string) (string, error) { return exec.LookPath(file) }
