package activities

import (
	"context"
	"errors"

	"github.com/jmoiron/sqlx"

	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/identity"
	"github.com/setflow/setflow/reaction"
	"github.com/setflow/setflow/serviceusers"
	"github.com/setflow/setflow/sessions"
	"github.com/setflow/setflow/userstate"
	"github.com/setflow/setflow/userstate/statedb"
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

// eachSessionAccount runs a session store call for every account of the
// event's user and adds up the sessions it touched: counted is the detail's
// name for that sum. Each call is idempotent, so a failure part-way is simply
// retried; a service callback that rejects the call fails the step for good.
func (a *Activities) eachSessionAccount(ctx context.Context, what, counted string, in reaction.StepInput,
	call func(ctx context.Context, accountID string) (int64, error)) (reaction.StepResult, error) {
	ids, err := a.accounts(ctx, what, in.Event.Subject.Issuer, in.Event.Subject.UserID)
	if err != nil {
		return reaction.StepResult{}, err
	}
	if len(ids) == 0 {
		return noAccount(), nil
	}
	var total int64
	for _, id := range ids {
		n, err := call(ctx, id)
		if errors.Is(err, sessions.ErrCallbackRejected) {
			return reaction.StepResult{}, classify(what, err, false, 0)
		}
		if err != nil {
			return reaction.StepResult{}, err
		}
		total += n
	}
	return done(map[string]any{counted: total, "accounts": len(ids)}), nil
}

func noAccount() reaction.StepResult {
	return reaction.StepResult{Outcome: reaction.OutcomeNoAccount, Detail: map[string]any{"reason": "the service has no account for this user"}}
}

// writeServiceUsers writes the user's current flags into each of its
// accounts' rows of the service's user table, when configured. It writes the
// state as it is now, read under the user's row lock and written in the
// lock's transaction — not the state an apply left, which a newer apply may
// already have replaced: an attempt that ran late (a retry of a parked
// event beside the user's next one, or an attempt that timed out but was
// still running) would otherwise write older flags over newer ones, e.g.
// unlocked over locked.
func (a *Activities) writeServiceUsers(ctx context.Context, sub userstate.Subject) error {
	if a.ServiceUsers == nil {
		return nil
	}
	ids, err := a.accounts(ctx, "service user table", sub.Issuer, sub.UserID)
	if err != nil || len(ids) == 0 {
		return err
	}
	err = a.States.Locked(ctx, sub.Hash, func(q sqlx.ExecerContext, s userstate.State) error {
		// A login path ends the sessions created at or before these times:
		// a time in whole seconds covers its second, as for revocation.
		f := serviceusers.Flags{Locked: s.Lock.Value == userstate.Locked, ReauthSince: event.SessionsUpTo(s.Reauth)}
		if s.Link.Value == userstate.Unlinked {
			f.UnlinkedSince = event.SessionsUpTo(s.Link.At)
		}
		for _, id := range ids {
			if _, err := a.ServiceUsers.Write(ctx, q, id, f); err != nil {
				return err
			}
		}
		return nil
	})
	switch {
	case errors.Is(err, statedb.ErrNotFound):
		return nil // no state yet: nothing to write
	case errors.Is(err, serviceusers.ErrSchema):
		return classify("service user table", err, false, 0)
	case err != nil:
		return classify("service user table", err, true, 0)
	}
	return nil
}
