package activities

import (
	"context"
	"errors"

	"github.com/setflow/setflow/sessions"
)

// RevokeSessions ends the user's sessions created at or before the event
// time; sessions created later survive (the user may have signed in again).
func (a *Activities) RevokeSessions(ctx context.Context, in StepInput) (StepResult, error) {
	if err := in.requireSubject("revoke sessions"); err != nil {
		return StepResult{}, err
	}
	if res, ok := a.shadowed(in); ok {
		return res, nil
	}
	n, err := a.Sessions.Revoke(ctx, in.Event.Subject.UserID, in.eventTime())
	if errors.Is(err, sessions.ErrCallbackRejected) {
		return StepResult{}, classify("revoke sessions", err, false, 0)
	}
	if err != nil {
		return StepResult{}, err
	}
	return done(map[string]any{"revoked": n}), nil
}
