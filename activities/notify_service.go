package activities

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/setflow/setflow/reaction"
	"github.com/setflow/setflow/servicehook"
	"github.com/setflow/setflow/statusapi"
	"github.com/setflow/setflow/userstate"
	"github.com/setflow/setflow/userstate/statedb"
)

// ServiceNotifier delivers a signed document to the service's endpoint
// (crm.Webhook.PostSigned: the CRM webhook's signature, retries and error
// classification).
type ServiceNotifier interface {
	PostSigned(ctx context.Context, adapter, op, key string, body []byte, sentAt time.Time, pii []string) error
	Clock() time.Time
}

// NotifyService POSTs a signed servicehook.Document to the service: the
// normalised event, the step's idempotency key (the same on every retry) and
// the user's state as it is now — which may already include a later event of
// the same user. The user stream runs one of a user's NotifyService steps at
// a time, so the versions sent never go back; the receiver still keeps the
// highest (a timed-out request may land after its retry). Any event type may
// name it in the policy; an event about no user carries no state.
func (a *Activities) NotifyService(ctx context.Context, in reaction.StepInput) (reaction.StepResult, error) {
	if a.ServiceHook == nil {
		return skipped("service webhook not configured"), nil
	}
	if res, ok := a.shadowed(in); ok {
		return res, nil
	}
	ev := in.Event
	doc := servicehook.Document{Type: servicehook.TypeUserEvent, IdempotencyKey: in.IdempotencyKey, AccountIDs: []string{},
		Event: servicehook.Event{Key: in.EventKey, Type: ev.Type, Name: ev.Name, Category: ev.Category, Issuer: ev.Subject.Issuer,
			KakaoUserID: ev.Subject.UserID, Time: ev.Time.UTC(), Payload: ev.Payload}}
	pii := []string{ev.Subject.UserID}
	if ev.Subject.UserID != "" {
		ids, err := a.accounts(ctx, "notify service", ev.Subject.Issuer, ev.Subject.UserID)
		if err != nil {
			return reaction.StepResult{}, err
		}
		doc.AccountIDs = append(doc.AccountIDs, ids...)
		pii = append(pii, ids...)
		if a.States != nil {
			snap, err := a.States.Get(ctx, a.Subjects.Hash(ev.Subject.Issuer, ev.Subject.UserID))
			switch {
			case errors.Is(err, statedb.ErrNotFound):
				v := statusapi.View(ev.Subject.Issuer, ev.Subject.UserID, userstate.State{}, false)
				doc.State = &v
			case err != nil:
				return reaction.StepResult{}, classify("notify service", err, true, 0)
			default:
				v := statusapi.View(ev.Subject.Issuer, ev.Subject.UserID, snap.State, true)
				doc.State = &v
			}
		}
	}
	sent := a.ServiceHook.Clock()
	doc.OccurredAt = sent.UTC()
	body, err := json.Marshal(doc)
	if err != nil {
		return reaction.StepResult{}, classify("notify service", err, false, 0)
	}
	if err := a.ServiceHook.PostSigned(ctx, "service-webhook", "notify", in.IdempotencyKey, body, sent, pii); err != nil {
		return reaction.StepResult{}, adapterError("notify service", err)
	}
	detail := map[string]any{"accounts": len(doc.AccountIDs)}
	if doc.State != nil {
		detail["version"] = doc.State.Version
	}
	return done(detail), nil
}
