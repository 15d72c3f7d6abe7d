package syncer

import (
	"errors"

	"github.com/ipvs-operator/ipvs-operator/ipvs/plan"
)

var (
	// ErrNotAdopted is returned by SyncService before Adopt has read the kernel: programming blind could
	// fight what a previous agent left.
	ErrNotAdopted = errors.New("sync: the kernel's state has not been adopted yet")
	// ErrInvalidDesired means the desired state breaks its own contract (a virtual server on an address
	// that is not one of its VIPs, a virtual server or real server listed twice, an invalid address).
	ErrInvalidDesired = errors.New("sync: invalid desired state")
	// ErrConflict means a VIP is owned by another Service. It happens only transiently, when a ClusterIP is
	// reused before the Service that had it was removed; the Service's other VIPs are still programmed,
	// and a retry succeeds once the other Service lets go.
	ErrConflict = errors.New("sync: VIP owned by another Service")
)

// OpError is a failed kernel operation. It unwraps to the kernel's error, so errors.Is(err, unix.EEXIST)
// and errors.Is(err, ipvs.ErrNotFound) see through it.
type OpError struct {
	Op  plan.Op
	Err error
}

func (e *OpError) Error() string { return e.Op.String() + ": " + e.Err.Error() }

// Unwrap returns the kernel's error.
func (e *OpError) Unwrap() error { return e.Err }
