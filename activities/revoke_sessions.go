package activities

import (
	"context"
	"time"

	"github.com/setflow/setflow/reaction"
)

// RevokeSessions ends the user's sessions created at or before the event
// time; sessions created later survive (the user may have signed in again).
// Sessions are keyed by the service's account ids (the identity mapping).
// An event time in whole seconds (a SET's NumericDate) covers its whole
// second (revocationCutoff).
func (a *Activities) RevokeSessions(ctx context.Context, in reaction.StepInput) (reaction.StepResult, error) {
	if err := in.RequireSubject("revoke sessions"); err != nil {
		return reaction.StepResult{}, err
	}
	if res, ok := a.shadowed(in); ok {
		return res, nil
	}
	// Every account of the user: sessions created later survive.
	return a.eachSessionAccount(ctx, "revoke sessions", "revoked", in, func(ctx context.Context, id string) (int64, error) {
		return a.Sessions.Revoke(ctx, id, revocationCutoff(in.EventTime()))
	})
}

// revocationCutoff is the latest session creation time an event at t ends.
// A time in whole seconds only says the event happened within that second:
// a session created 300 ms after 12:00:00 may predate an event stamped
// 12:00:00 and be the attacker's, so the whole second is revoked (a user who
// signed in again within it signs in once more). user-state.md says "at or
// before its time"; this is the safer reading for second-granularity times.
// A time with sub-second precision is taken as it is.
func revocationCutoff(t time.Time) time.Time {
	if t.Nanosecond() != 0 {
		return t
	}
	return t.Add(time.Second - time.Nanosecond)
}
