// Package nodelock is the agent's per-node lock and control channel: an abstract unix socket bound in the
// host network namespace.
//
// The agent owns one node's kernel state (IPVS table, dummy interface, nftables table), so two agents on one
// kernel would sweep each other's state. Abstract socket names are scoped to a network namespace, so binding
// one is a lock per kernel network namespace: exactly the scope of what the agent programs. The kernel
// releases it when the process dies (no stale lock file, no host path to mount), and a lab "node" that is a
// network namespace gets its own lock.
//
// The same socket carries commands to the agent holding it (`agent --cleanup` asks the running agent to stop
// programming and clean up, so that its next audit cannot put everything back). Abstract sockets have no file
// permissions: the holder accepts commands only from peers whose SO_PEERCRED uid is 0.
package nodelock

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultName is the agent's lock: "@" + DefaultName in `ss -xl`.
const DefaultName = "ipvs-operator-agent"

// ErrHeld is matched (errors.Is) by a *HeldError.
var ErrHeld = errors.New("nodelock: held by another process")

// HeldError says who holds the lock, as the kernel reports the holder's credentials (SO_PEERCRED).
type HeldError struct {
	Name string
	// PID is the holder's pid in this process's PID namespace; 0 when the holder is not visible from it
	// (another container without hostPID).
	PID int32
	UID uint32
}

func (e *HeldError) Error() string {
	pid := fmt.Sprintf("pid %d", e.PID)
	if e.PID == 0 {
		pid = "pid not visible from this PID namespace"
	}
	msg := fmt.Sprintf("another agent holds the per-node lock @%s (%s): only one agent may program a node's kernel", e.Name, pid)
	if e.UID != 0 {
		msg += fmt.Sprintf("; the holder runs as uid %d, which no agent does: find and stop it", e.UID)
	}
	return msg
}

// Is makes errors.Is(err, ErrHeld) true.
func (e *HeldError) Is(target error) bool { return target == ErrHeld }

// Lock is a held per-node lock. It stays held until Close or the end of the process.
type Lock struct {
	name string
	ln   *net.UnixListener
}

// Acquire binds the abstract socket @name in the calling thread's network namespace. If another process
// holds it, the error is a *HeldError naming that process.
func Acquire(name string) (*Lock, error) {
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: "@" + name, Net: "unix"})
	if err == nil {
		return &Lock{name: name, ln: ln}, nil
	}
	if !errors.Is(err, unix.EADDRINUSE) {
		return nil, fmt.Errorf("nodelock: binding @%s: %w", name, err)
	}
	held := &HeldError{Name: name}
	// The holder's credentials: a connected socket's SO_PEERCRED are those of the process that called
	// listen. The holder sees a connection that sends nothing and drops it.
	conn, derr := net.DialUnix("unix", nil, &net.UnixAddr{Name: "@" + name, Net: "unix"})
	if derr == nil {
		if cred, cerr := peerCred(conn); cerr == nil {
			held.PID, held.UID = cred.Pid, cred.Uid
		}
		_ = conn.Close()
	}
	return nil, held
}

// Close releases the lock (the process's end does too).
func (l *Lock) Close() error { return l.ln.Close() }

// Handler runs a command sent by an authorised peer and returns its output for the peer to print.
type Handler func(ctx context.Context, command string) (string, error)

// request and response are the wire format: one JSON object per line each way.
type request struct {
	Command string `json:"command"`
}

type response struct {
	Output string `json:"output,omitempty"`
	Error  string `json:"error,omitempty"`
}

// requestTimeout bounds how long a peer may take to send its command.
const requestTimeout = 10 * time.Second

// Serve answers commands on the lock's socket until ctx ends, one goroutine per connection. Peers that
// are not uid 0 are refused. When ctx ends Serve stops accepting but keeps the lock: it is released by
// Close or when the process ends, so a successor cannot start while this agent is still shutting down.
func (l *Lock) Serve(ctx context.Context, h Handler) error {
	stop := context.AfterFunc(ctx, func() { _ = l.ln.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	for {
		conn, err := l.ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("nodelock: accepting on @%s: %w", l.name, err)
		}
		go serveConn(ctx, conn, h)
	}
}

func serveConn(ctx context.Context, conn *net.UnixConn, h Handler) {
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(requestTimeout))
	line, err := bufio.NewReader(conn).ReadBytes('\n')
	if err != nil {
		return // a holder probe (Acquire) or a peer that gave up: nothing to answer
	}
	_ = conn.SetReadDeadline(time.Time{})
	var resp response
	var req request
	if err := authorise(conn); err != nil {
		resp.Error = err.Error()
	} else if err := json.Unmarshal(line, &req); err != nil {
		resp.Error = fmt.Sprintf("nodelock: malformed request: %v", err)
	} else {
		out, err := h(ctx, req.Command)
		resp.Output = out
		if err != nil {
			resp.Error = err.Error()
		}
	}
	b, _ := json.Marshal(resp)
	_, _ = conn.Write(append(b, '\n'))
}

// ErrPermission is the refusal of a peer that is not root.
var ErrPermission = errors.New("nodelock: permission denied")

// authorise admits only root: anyone in the network namespace can connect to an abstract socket.
func authorise(conn *net.UnixConn) error {
	cred, err := peerCred(conn)
	if err != nil {
		return fmt.Errorf("nodelock: reading the peer's credentials: %w", err)
	}
	return admit(cred)
}

// admit is the policy: root only.
func admit(cred *unix.Ucred) error {
	if cred.Uid != 0 {
		return fmt.Errorf("%w: uid %d (pid %d) is not root", ErrPermission, cred.Uid, cred.Pid)
	}
	return nil
}

// Ask sends command to the process holding the lock @name and waits for its answer (or ctx's end). The
// holder's error comes back as an error; its output is returned either way. If nothing holds the lock the
// error matches unix.ECONNREFUSED.
func Ask(ctx context.Context, name, command string) (string, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", "@"+name)
	if err != nil {
		return "", fmt.Errorf("nodelock: connecting to @%s: %w", name, err)
	}
	conn := c.(*net.UnixConn)
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	b, _ := json.Marshal(request{Command: command})
	if _, err := conn.Write(append(b, '\n')); err != nil {
		return "", fmt.Errorf("nodelock: sending %q to @%s: %w", command, name, err)
	}
	line, err := bufio.NewReader(conn).ReadBytes('\n')
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return "", fmt.Errorf("nodelock: waiting for the answer to %q from @%s: %w", command, name, err)
	}
	var resp response
	if err := json.Unmarshal(line, &resp); err != nil {
		return "", fmt.Errorf("nodelock: malformed answer from @%s: %w", name, err)
	}
	if resp.Error != "" {
		return resp.Output, errors.New(resp.Error)
	}
	return resp.Output, nil
}

func peerCred(conn *net.UnixConn) (*unix.Ucred, error) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var cerr error
	err = raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	if err != nil {
		return nil, err
	}
	return cred, cerr
}
