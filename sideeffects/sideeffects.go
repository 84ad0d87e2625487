// Package sideeffects is the log of side effects that cannot be made
// idempotent at the far end (email): an attempt claims its key before it
// acts and finishes it after, so that a retry knows whether to act again.
// It owns the setflow_side_effects table.
package sideeffects

import (
	"context"
	"time"
)

// Status is where a claimed side effect stands.
type Status string

const (
	// StatusStarted: an attempt is acting (or vanished while it did).
	StatusStarted Status = "started"
	// StatusUncertain: an attempt ended without knowing whether the far end
	// took it (a connection cut after SMTP DATA).
	StatusUncertain Status = "uncertain"
	// StatusDone: an attempt finished it.
	StatusDone Status = "done"
)

// KindEmail is the kind of a security notice.
const KindEmail = "email"

// Claim is what the log said to an attempt.
type Claim struct {
	// Act says this attempt acts; Repeat, that an earlier attempt may have
	// acted already (a takeover).
	Act, Repeat bool
	// Status is the claim's status when the attempt must not act: done, or
	// started by an attempt that may still be running.
	Status Status
}

// Log is the side-effect log.
type Log interface {
	// Claim records that an attempt is about to act under key. A new key
	// is claimed at once. A known key is taken over (Repeat) when its
	// attempt is certainly over: it ended uncertain, or it started more than
	// deadline ago (its worker died). Otherwise the attempt must not act:
	// the key is done, or an earlier attempt may still be acting.
	Claim(ctx context.Context, key, kind string, deadline time.Duration) (Claim, error)
	// Finish records the key done, with what the far end answered (the
	// message id).
	Finish(ctx context.Context, key, detail string) error
	// Settle records how a failed attempt ended: maybeActed false releases
	// the claim (the retry acts as if first), true leaves it uncertain (the
	// retry acts again, as a repeat). A claim not started is left alone.
	Settle(ctx context.Context, key string, maybeActed bool) error
	// Attempts reports how many attempts claimed key (0 for an unknown key).
	Attempts(ctx context.Context, key string) (int, error)
}
