package operator

import (
	"context"
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
)

// Reason and action of the event the operator records on a Service the agents serve only in part.
const (
	// EventReasonNotServed: the agents serve the Service's ClusterIP, but not its node ports, external IPs or
	// load-balancer IPs, and nothing else does (see NotServed).
	EventReasonNotServed = "NotServed"
	eventActionServe     = "Serve"
)

// Reading back its own NotServed events is how the operator avoids repeating them when it restarts.
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=list

// NotServedReconciler records one Warning event (reason NotServed) on each Service whose ClusterIP the agents
// serve while node ports, external IPs or load-balancer IPs of it go unserved. It is the operator's job, not
// the agents': one event per Service, not one per node.
//
// A Service is warned once per distinct condition, that is per distinct note (NotServedNote): resyncs and
// unrelated edits record nothing; an edit that changes what goes unserved records a new event; a Service that
// stops having unserved parts is forgotten, so it is warned again if they come back. Across restarts and
// leader changes the operator reads the NotServed events still stored (the API server keeps events for its
// --event-ttl, one hour by default) and does not repeat a note already there; once they expired, a restart
// warns again, once.
type NotServedReconciler struct {
	client.Client
	// APIReader lists events without a cache (the operator does not watch events); use the manager's
	// GetAPIReader.
	APIReader client.Reader
	// Recorder records the events; use the manager's GetEventRecorder.
	Recorder events.EventRecorder
	// ManageAll is the agents' scope: true for scope all, false for labelled.
	ManageAll bool

	mu sync.Mutex
	// warned is the note last recorded (or found recorded) per Service, with the Service's UID: a Service
	// deleted and created again under the same name is a new Service.
	warned map[types.NamespacedName]warnedNote
	// stored holds the notes of the NotServed events found in the API at the first need, by Service UID; each
	// entry is used once, when its Service is first seen.
	stored map[types.UID]sets.Set[string]
}

type warnedNote struct {
	uid  types.UID
	note string
}

// Reconcile records the NotServed event of one Service if its condition is new.
func (r *NotServedReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var svc corev1.Service
	if err := r.Get(ctx, req.NamespacedName, &svc); err != nil {
		if apierrors.IsNotFound(err) {
			r.forget(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	note := NotServedNote(&svc, r.ManageAll)
	if note == "" {
		r.forget(req.NamespacedName)
		return ctrl.Result{}, nil
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	w, seen := r.warned[req.NamespacedName]
	if seen && w.uid == svc.UID && w.note == note {
		return ctrl.Result{}, nil
	}
	if !seen || w.uid != svc.UID {
		// First sight of this Service by this process: was it warned before a restart?
		stored, err := r.storedNotes(ctx, svc.UID)
		if err != nil {
			return ctrl.Result{}, err
		}
		if stored.Has(note) {
			r.remember(req.NamespacedName, svc.UID, note)
			return ctrl.Result{}, nil
		}
	}
	if r.Recorder != nil {
		r.Recorder.Eventf(&svc, nil, corev1.EventTypeWarning, EventReasonNotServed, eventActionServe, "%s", note)
	}
	log.FromContext(ctx).Info("Service is served only in part", "note", note)
	r.remember(req.NamespacedName, svc.UID, note)
	return ctrl.Result{}, nil
}

func (r *NotServedReconciler) forget(key types.NamespacedName) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.warned, key)
}

// remember needs r.mu.
func (r *NotServedReconciler) remember(key types.NamespacedName, uid types.UID, note string) {
	if r.warned == nil {
		r.warned = map[types.NamespacedName]warnedNote{}
	}
	r.warned[key] = warnedNote{uid: uid, note: note}
}

// storedNotes returns the notes of the NotServed events stored for the Service with uid, and forgets them.
// The first call lists every NotServed event of the cluster once (a field selector on the reason, in pages);
// if the operator may not list events (an install from before it needed to) it warns without this memory, a
// repeat per restart, and says so in its log. Needs r.mu.
func (r *NotServedReconciler) storedNotes(ctx context.Context, uid types.UID) (sets.Set[string], error) {
	if r.stored == nil {
		stored, err := r.listStored(ctx)
		if apierrors.IsForbidden(err) {
			log.FromContext(ctx).Error(err, "Cannot read earlier NotServed events; a restart repeats them")
			stored = map[types.UID]sets.Set[string]{}
		} else if err != nil {
			return nil, fmt.Errorf("listing NotServed events: %w", err)
		}
		r.stored = stored
	}
	notes := r.stored[uid]
	delete(r.stored, uid)
	return notes, nil
}

func (r *NotServedReconciler) listStored(ctx context.Context) (map[types.UID]sets.Set[string], error) {
	stored := map[types.UID]sets.Set[string]{}
	selector := fields.SelectorFromSet(fields.Set{"reason": EventReasonNotServed, "type": corev1.EventTypeWarning})
	opts := []client.ListOption{client.MatchingFieldsSelector{Selector: selector}, client.Limit(500)}
	for {
		var list eventsv1.EventList
		if err := r.APIReader.List(ctx, &list, opts...); err != nil {
			return nil, err
		}
		for _, e := range list.Items {
			if e.Regarding.Kind != "Service" {
				continue
			}
			if stored[e.Regarding.UID] == nil {
				stored[e.Regarding.UID] = sets.New[string]()
			}
			stored[e.Regarding.UID].Insert(e.Note)
		}
		if list.Continue == "" {
			return stored, nil
		}
		opts = []client.ListOption{client.MatchingFieldsSelector{Selector: selector}, client.Limit(500), client.Continue(list.Continue)}
	}
}

// SetupWithManager registers the reconciler. Every Service change is looked at (Services never bump their
// generation, and a load balancer's IPs arrive in status); the work per change is a pure function of the
// Service and a map lookup.
func (r *NotServedReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("service-notserved").
		For(&corev1.Service{}).
		Complete(r)
}
