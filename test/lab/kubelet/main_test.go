package kubelet

import (
	"context"
	"flag"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/ipvs-operator/ipvs-operator/test/lab/echo"
)

// TestMain lets the test binary stand in for labvm: the kubelet under test starts `<this binary> echo ...`
// for echo containers.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "echo" {
		os.Exit(fakeLabvmEcho(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == ContainerCommand {
		err := ExecInMountNamespace(os.Args[2:])
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(127)
	}
	os.Exit(m.Run())
}

func fakeLabvmEcho(args []string) int {
	fs := flag.NewFlagSet("echo", flag.ContinueOnError)
	name := fs.String("name", "", "")
	tcp := fs.String("tcp", "", "")
	udp := fs.String("udp", "", "")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ports := func(s string) []int {
		var out []int
		for _, p := range strings.Split(s, ",") {
			if n, err := strconv.Atoi(p); err == nil {
				out = append(out, n)
			}
		}
		return out
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := echo.Serve(ctx, echo.Config{Name: *name, TCP: ports(*tcp), UDP: ports(*udp)}); err != nil {
		return 1
	}
	return 0
}
