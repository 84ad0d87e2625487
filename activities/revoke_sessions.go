package activities

import (
	"context"
	"errors"

	"github.com/setflow/setflow/reaction"
	"github.com/setflow/setflow/sessions"
)

// RevokeSessions ends the user's sessions created at or before the event
// time; sessions created later survive (the user may have signed in again).
// Sessions are keyed by the service's account ids (the identity mapping).
func (a *Activities) RevokeSessions(ctx context.Context, in reaction.StepInput) (reaction.StepResult, error) {
	if err := in.RequireSubject("revoke sessions"); err != nil {
		return reaction.StepResult{}, err
	}
	if res, ok := a.shadowed(in); ok {
		return res, nil
	}
	ids, err := a.accounts(ctx, "revoke sessions", in.Event.Subject.Issuer, in.Event.Subject.UserID)
	if err != nil {
		return reaction.StepResult{}, err
	}
	if len(ids) == 0 {
		return noAccount(), nil
	}
	// Every account of the user; a retry revokes nothing twice (each
	// Revoke is idempotent), so a failure part-way is simply retried.
	var total int64
	for _, id := range ids {
		n, err := a.Sessions.Revoke(ctx, id, in.EventTime())
		if errors.Is(err, sessions.ErrCallbackRejected) {
			return reaction.StepResult{}, classify("revoke sessions", err, false, 0)
		}
		if err != nil {
			return reaction.StepResult{}, err
		}
		total += n
	}
	return done(map[string]any{"revoked": total, "accounts": len(ids)}), nil
}
