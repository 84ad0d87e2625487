package activities

import (
	"context"
	"errors"

	"github.com/setflow/setflow/identity"
)

// accounts returns the service's account ids of the event's user, through
// the identity mapping (identity.Identity when none is configured).
func (a *Activities) accounts(ctx context.Context, what, issuer, userID string) ([]string, error) {
	m := a.Accounts
	if m == nil {
		m = identity.Identity{}
	}
	ids, err := m.Accounts(ctx, issuer, userID)
	if errors.Is(err, identity.ErrRejected) {
		return nil, classify(what, err, false, 0)
	}
	if err != nil {
		return nil, classify(what, err, true, 0)
	}
	return ids, nil
}

func noAccount() StepResult {
	return StepResult{Outcome: OutcomeNoAccount, Detail: map[string]any{"reason": "the service has no account for this user"}}
}
