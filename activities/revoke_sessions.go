package activities

import (
	"context"

	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/reaction"
)

// RevokeSessions ends the user's sessions created at or before the event
// time, to the end of its second when the time is in whole seconds
// (event.SessionsUpTo); sessions created later survive (the user may have
// signed in again). Sessions are keyed by the service's account ids (the
// identity mapping).
func (a *Activities) RevokeSessions(ctx context.Context, in reaction.StepInput) (reaction.StepResult, error) {
	if err := in.RequireSubject("revoke sessions"); err != nil {
		return reaction.StepResult{}, err
	}
	if res, ok := a.shadowed(in); ok {
		return res, nil
	}
	// Every account of the user: sessions created later survive.
	return a.eachSessionAccount(ctx, "revoke sessions", "revoked", in, func(ctx context.Context, id string) (int64, error) {
		return a.Sessions.Revoke(ctx, id, event.SessionsUpTo(in.EventTime()))
	})
}
