// Package inbox is the durable hand-off between the ingress and the relay. The
// ingress acknowledges a delivery only after Put has committed it; the relay
// claims due entries and hands them to the reaction engine.
package inbox

import (
	"context"
	"errors"
	"time"

	"github.com/setflow/setflow/event"
)

// Entry is one delivery as stored.
type Entry struct {
	ID       int64
	Envelope event.Envelope
	// Raw is the body exactly as received (the signed token for SETs), kept so that
	// an operator can re-verify or re-process an event later.
	Raw      []byte
	Status   Status
	Attempts int

	// What the relay and the reaction recorded about the entry (Get and List
	// fill them; Put ignores them).
	ReceivedAt   time.Time // when the store accepted it
	DispatchedAt time.Time // zero until the relay handed it over
	LastError    string    // the relay's last failure, or the parked step and why
	WorkflowID   string    // where it was handed over, or the parked workflow
	// Unreadable says why the stored envelope did not decode (Get and List
	// still return such an entry, with only its key and source, so that one
	// damaged row does not hide the others from an operator).
	Unreadable string
}

// SourceParked is the source of a placeholder entry: a step parked under a key
// whose own entry was gone (Park), kept so the parked step stays listed and
// retryable. Its Raw is empty.
const SourceParked event.Source = "parked"

// Status is an entry's place in the relay's life cycle.
type Status string

const (
	StatusPending    Status = "pending"
	StatusDispatched Status = "dispatched"
	StatusParked     Status = "parked"
)

// ErrNotFound is returned by Get for an unknown key.
var ErrNotFound = errors.New("inbox: no entry with that key")

// Writer is all the ingress needs: store an envelope once, and look up
// whether a recent one is already stored.
type Writer interface {
	// Put stores the entry under its envelope key and returns only once it is
	// committed (a nil error means a committed row; the Postgres store shares
	// commits between concurrent Puts, see groupcommit.go). It reports
	// inserted=false, without error, when an entry with the same key already
	// exists or an earlier Put of the same commit holds the key: the caller
	// answers a duplicate exactly like the first delivery.
	Put(ctx context.Context, e Entry) (inserted bool, err error)
	// ReceivedAfter reports whether an entry is stored under key whose
	// envelope's ReceivedAt is strictly after t. A time-windowed dedupe (the
	// unlink webhook) uses it to recognise a repeat of the previous window
	// bucket's delivery.
	ReceivedAfter(ctx context.Context, key string, t time.Time) (bool, error)
}

// Deliver hands one entry to the reaction engine and returns the id of the work
// it started (or found already started).
type Deliver func(ctx context.Context, e Entry) (workflowID string, err error)

// Backoff says how long to wait before the next attempt after `attempts` failures.
type Backoff func(attempts int) time.Duration

// Store is the full inbox: the ingress writes, the relay claims.
type Store interface {
	Writer
	// Relay claims up to limit due pending entries so that no other relay sees
	// them, calls deliver for each, and records each outcome: dispatched on
	// success, or a later retry time on failure. It returns how many it claimed.
	Relay(ctx context.Context, limit int, deliver Deliver, backoff Backoff) (int, error)
	// Get returns the entry stored under key.
	Get(ctx context.Context, key string) (Entry, error)
	// Prune deletes the dispatched entries older than retention whose work
	// finished says is finished, and reports how many; pending and parked
	// entries are never pruned.
	Prune(ctx context.Context, retention time.Duration, finished Finished) (int64, error)
	Parking
	// Requeue puts a parked entry back in the relay's queue, due now, for a
	// new run of its work (its workflow gave up); any other entry is left
	// as it is.
	Requeue(ctx context.Context, key string) error
	// List returns the entries the filter selects, without their Raw.
	List(ctx context.Context, f Filter) ([]Entry, error)
}

// Parking is what a reaction needs to make its stuck work visible to
// operators, and to clear it once it runs again.
type Parking interface {
	// Park marks the entry under key parked, with why (clipped to
	// MaxErrorLen) and the workflow that waits for a retry. A key with no
	// entry gets a placeholder (SourceParked).
	Park(ctx context.Context, key, reason, workflowID string) error
	// Unpark marks a parked entry dispatched again and clears its reason;
	// any other entry is left as it is.
	Unpark(ctx context.Context, key string) error
}

// Filter selects entries for List; its zero value selects every entry.
type Filter struct {
	Status Status
	Source event.Source
	// Event matches an entry with an event of this short name
	// (account-disabled) or full type URI.
	Event string
	// Step matches an entry parked at this step, with or without its event
	// name (send_notice, or account-disabled/send_notice).
	Step string
	// From and Until bound when the store accepted the entry (inclusive;
	// zero: unbounded).
	From, Until time.Time
	// Limit caps the entries returned (0: no cap); OldestFirst orders them by
	// arrival, newest first otherwise.
	Limit       int
	OldestFirst bool
}

// MaxErrorLen bounds a stored failure or park reason.
const MaxErrorLen = 500

func clip(s string) string {
	if len(s) > MaxErrorLen {
		return s[:MaxErrorLen]
	}
	return s
}

// DefaultBackoff doubles from one second up to one minute: Temporal outages are
// usually short, and a minute keeps the catch-up delay bounded when it returns.
func DefaultBackoff(attempts int) time.Duration {
	d := time.Second
	for i := 1; i < attempts && d < time.Minute; i++ {
		d *= 2
	}
	return min(d, time.Minute)
}

// Finished reports which of the envelopes (by key) name entries whose work
// is finished, so that retention may delete them. The inbox cannot tell: the
// work is recorded by other stores (relay.WorkFinished asks the audit and the
// users' states).
type Finished func(ctx context.Context, envs []event.Envelope) (map[string]bool, error)
