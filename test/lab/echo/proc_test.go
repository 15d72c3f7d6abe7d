package echo

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"testing"
)

// countEstablished counts ESTABLISHED IPv4 sockets whose local port is port (the server's side of each
// connection), from /proc/net/tcp.
func countEstablished(t *testing.T, port int) int {
	t.Helper()
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		t.Skipf("no /proc/net/tcp: %v", err)
	}
	defer f.Close()
	want := fmt.Sprintf(":%04X", port)
	n := 0
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) > 3 && strings.HasSuffix(fields[1], want) && fields[3] == "01" {
			n++
		}
	}
	return n
}
