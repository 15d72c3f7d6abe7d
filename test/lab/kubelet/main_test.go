package kubelet

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ipvs-operator/ipvs-operator/test/lab/echo"
)

// TestMain lets the test binary stand in for labvm: the kubelet under test starts `<this binary> echo ...`
// for echo containers.
func TestMain(m *testing.M) {
	if filepath.Base(os.Args[0]) == fakeAgentName {
		os.Exit(fakeAgent(os.Args[1:]))
	}
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

// statusField is one field of /proc/<pid>/status.
func statusField(status, name string) string {
	for _, line := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "?"
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
	// As `labvm echo`: the first SIGTERM starts the shutdown delay ($FAKE_ECHO_SHUTDOWN_DELAY, else labvm's
	// default), during which the server answers everything, /readyz included; the line below tells a test
	// when SIGTERM came.
	delay := echo.DefaultShutdownDelay
	if d, err := time.ParseDuration(os.Getenv("FAKE_ECHO_SHUTDOWN_DELAY")); err == nil {
		delay = d
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	shutdown := make(chan struct{})
	go func() {
		<-sigs
		fmt.Fprintln(os.Stderr, fakeEchoTermLine)
		close(shutdown)
	}()
	cfg := echo.Config{Name: *name, TCP: ports(*tcp), UDP: ports(*udp), Shutdown: shutdown, ShutdownDelay: delay}
	if err := echo.Serve(context.Background(), cfg); err != nil {
		return 1
	}
	return 0
}

// fakeEchoTermLine is what the fake echo server logs when SIGTERM arrives.
const fakeEchoTermLine = "fake echo: SIGTERM received"

// fakeAgentName is the binary name a mapped image's command resolves to in TestKubeletRunsAMappedBinary.
const fakeAgentName = "fakeagent"

// fakeAgent reports what a mapped container sees (arguments, environment, its volume mounts and
// ServiceAccount files) into the file named by its first argument, then waits for SIGTERM.
func fakeAgent(args []string) int {
	if len(args) < 1 {
		return 2
	}
	read := func(path string) string {
		b, err := os.ReadFile(path)
		if err != nil {
			return "ERR:" + err.Error()
		}
		return string(b)
	}
	report := []string{
		"args=" + strings.Join(args[1:], " "),
		"node=" + os.Getenv("NODE_NAME"),
		"kubeconfig=" + os.Getenv("KUBECONFIG"),
		"service=" + os.Getenv("KUBERNETES_SERVICE_HOST") + ":" + os.Getenv("KUBERNETES_SERVICE_PORT"),
		"hostpath=" + read("/host/lab-kubelet-test/file"),
		"token=" + read("/var/run/secrets/kubernetes.io/serviceaccount/token"),
		"namespace=" + read("/var/run/secrets/kubernetes.io/serviceaccount/namespace"),
		"capeff=" + statusField(read("/proc/self/status"), "CapEff"),
		"nonewprivs=" + statusField(read("/proc/self/status"), "NoNewPrivs"),
		"rootwritable=" + fmt.Sprint(os.WriteFile("/.lab-kubelet-test-root", nil, 0o644) == nil),
	}
	_ = os.Remove("/.lab-kubelet-test-root")
	if err := os.WriteFile(args[0], []byte(strings.Join(report, "\n")+"\n"), 0o644); err != nil {
		return 1
	}
	if os.Getenv("FAKE_AGENT_EXIT") != "" {
		return 0 // an init container: done
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	return 0
}
