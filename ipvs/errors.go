package ipvs

import (
	"errors"

	"golang.org/x/sys/unix"
)

// Error is a failed IPVS operation. It unwraps to the kernel's errno, so errors.Is(err, unix.EEXIST) works,
// and it also matches ErrExists or ErrNotFound when the errno means that for the operation: the kernel
// answers ENOENT both for "no such real server" and, on AddService/UpdateService, for "no such scheduler".
// The netlink implementation and package fake both return it, so code under test sees the same errors.
type Error struct {
	// Op is the Interface method that failed, e.g. "AddService".
	Op string
	// Object is what the operation acted on, in ipvsadm notation: "-t 10.96.0.10:80 -r 10.244.1.2:8080".
	Object string
	// Err is the cause, usually a unix.Errno.
	Err error
}

// Error implements error.
func (e *Error) Error() string {
	msg := "ipvs: " + e.Op
	if e.Object != "" {
		msg += " " + e.Object
	}
	if e.schedulerMissing() {
		return msg + ": scheduler not found (is its ip_vs_<name> module loaded?): " + e.Err.Error()
	}
	return msg + ": " + e.Err.Error()
}

// Unwrap returns the cause, usually a unix.Errno.
func (e *Error) Unwrap() error { return e.Err }

// Is reports whether the error means ErrExists, ErrNotFound or ErrSchedulerNotFound.
func (e *Error) Is(target error) bool {
	var errno unix.Errno
	if !errors.As(e.Err, &errno) {
		return false
	}
	switch target {
	case ErrExists:
		return errno == unix.EEXIST
	case ErrSchedulerNotFound:
		return e.schedulerMissing()
	case ErrNotFound:
		// ESRCH: no such virtual server; ENOENT: no such real server (except on the service verbs).
		return errno == unix.ESRCH || (errno == unix.ENOENT && !e.schedulerMissing())
	}
	return false
}

// schedulerMissing reports whether ENOENT came from a verb that names a scheduler.
func (e *Error) schedulerMissing() bool {
	return (e.Op == OpAddService || e.Op == OpUpdateService) && errors.Is(e.Err, unix.ENOENT)
}

// Operation names used in Error.Op, one per Interface method.
const (
	OpServices          = "Services"
	OpService           = "Service"
	OpAddService        = "AddService"
	OpUpdateService     = "UpdateService"
	OpDeleteService     = "DeleteService"
	OpDestinations      = "Destinations"
	OpAddDestination    = "AddDestination"
	OpUpdateDestination = "UpdateDestination"
	OpDeleteDestination = "DeleteDestination"
)
