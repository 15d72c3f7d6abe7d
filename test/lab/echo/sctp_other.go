//go:build !linux

package echo

import (
	"context"
	"errors"
	"net"
)

// errNoSCTP: the lab's SCTP sockets are Linux's (sctp_linux.go); the lab and kind nodes are Linux.
var errNoSCTP = errors.New("sctp is supported on Linux only")

func sctpSupported() error { return errNoSCTP }

func listenSCTP(string, int) (net.Listener, error) { return nil, errNoSCTP }

func dialSCTP(context.Context, string, int) (net.Conn, error) { return nil, errNoSCTP }
