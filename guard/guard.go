// Package guard is the blast-radius guard: when destructive reaction steps
// (session revocation, lock, purge, CRM deletes) across all users come faster
// than a configured rate — a compromised or misconfigured sender, a replay —
// new destructive work is held for an operator instead of run. An operator
// approves or rejects held events one by one, by filter or all at once.
//
// The guard is a circuit breaker, not a rate limiter: once it holds an event
// it holds every new destructive event until no hold is undecided, so that a
// storm does not trickle through at the allowed rate while operators look.
package guard

import (
	"context"
	"errors"
	"time"
)

// Decision is what the guard says about an event's destructive steps.
type Decision string

const (
	// Admitted: run them now.
	Admitted Decision = "admitted"
	// Held: wait for an operator.
	Held Decision = "held"
	// Approved: an operator let held work run.
	Approved Decision = "approved"
	// Rejected: an operator refused held work; it never runs.
	Rejected Decision = "rejected"
)

// Request asks to run one event's destructive steps. It carries no personal
// data: the subject is the keyed hash.
type Request struct {
	EventKey    string   `json:"event_key"`
	SubjectHash string   `json:"subject_hash"`
	EventName   string   `json:"event_name"`
	Steps       []string `json:"steps"`
	WorkflowID  string   `json:"workflow_id"`
}

// Verdict is the guard's answer, with who decided when an operator did.
type Verdict struct {
	Decision Decision `json:"decision"`
	// Reason says why an event was held (the rate seen, or an earlier hold).
	Reason string `json:"reason,omitempty"`
	By     string `json:"by,omitempty"`
	Note   string `json:"note,omitempty"`
}

// Hold is one held event.
type Hold struct {
	EventKey    string     `db:"event_key" json:"event_key"`
	SubjectHash string     `db:"subject_hash" json:"subject_hash"`
	EventName   string     `db:"event_name" json:"event_name"`
	Steps       []string   `db:"-" json:"steps"`
	WorkflowID  string     `db:"workflow_id" json:"workflow_id"`
	Reason      string     `db:"reason" json:"reason"`
	HeldAt      time.Time  `db:"held_at" json:"held_at"`
	Decision    *string    `db:"decision" json:"decision,omitempty"`
	DecidedBy   *string    `db:"decided_by" json:"decided_by,omitempty"`
	DecidedAt   *time.Time `db:"decided_at" json:"decided_at,omitempty"`
	Note        *string    `db:"note" json:"note,omitempty"`
}

// Filter selects holds. Zero fields match everything; Pending limits to
// undecided holds.
type Filter struct {
	EventKey  string
	EventName string
	Subject   string
	Since     time.Time
	Pending   bool
	Limit     int
}

// Limit is the configured rate: more than Max destructive steps within Window
// trips the guard. Max 0 turns the guard off.
type Limit struct {
	Max    int
	Window time.Duration
}

// Guard decides and records. Admit is idempotent per event key: asking again
// returns the same answer, or the operator's decision once there is one.
type Guard interface {
	Admit(ctx context.Context, req Request) (Verdict, error)
	List(ctx context.Context, f Filter) ([]Hold, error)
	// Decide records an operator's decision for the undecided holds f
	// selects and returns them.
	Decide(ctx context.Context, f Filter, d Decision, by, note string) ([]Hold, error)
	// Pending counts undecided holds.
	Pending(ctx context.Context) (int, error)
}

// ErrBadDecision is returned for a decision other than approve or reject.
var ErrBadDecision = errors.New("guard: a decision is approved or rejected")
