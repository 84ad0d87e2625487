package activities

import (
	"context"
	"errors"
	"time"

	"go.temporal.io/sdk/temporal"
)

// RevokeSessionsInput names the user and the event time; sessions created after
// that time survive.
type RevokeSessionsInput struct {
	IdempotencyKey string    `json:"idempotency_key"`
	UserID         string    `json:"user_id"`
	CreatedBefore  time.Time `json:"created_before"`
}

// RevokeSessionsResult reports how many sessions this call ended (0 on a retry
// after a call that already ended them).
type RevokeSessionsResult struct {
	Revoked int64 `json:"revoked"`
}

// RevokeSessions ends the user's sessions created at or before the event time.
func (a *Activities) RevokeSessions(ctx context.Context, in RevokeSessionsInput) (RevokeSessionsResult, error) {
	if in.UserID == "" {
		return RevokeSessionsResult{}, temporal.NewNonRetryableApplicationError(
			"revoke sessions: event has no user id", "MissingSubject", errors.New("empty user id"))
	}
	n, err := a.Sessions.Revoke(ctx, in.UserID, in.CreatedBefore)
	if err != nil {
		return RevokeSessionsResult{}, err
	}
	return RevokeSessionsResult{Revoked: n}, nil
}
