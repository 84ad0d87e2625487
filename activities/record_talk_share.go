package activities

import (
	"context"
	"encoding/json"
	"errors"
	"slices"

	"github.com/setflow/setflow/reaction"
	"github.com/setflow/setflow/talk"
)

// shareDelivery reads the Talk Share delivery of an event (payload
// talk.SharePayload). The event's time is when the delivery was received.
func shareDelivery(in reaction.StepInput) (talk.Delivery, error) {
	var p talk.SharePayload
	if err := json.Unmarshal(in.Event.Payload, &p); err != nil || p.ResourceID == "" {
		if err == nil {
			err = errors.New("no resource id")
		}
		return talk.Delivery{}, classify("talk share: malformed event payload", err, false, 0)
	}
	return talk.Delivery{
		EventKey: in.EventKey, ResourceID: p.ResourceID, ChatType: p.ChatType, HashChatID: p.HashChatID,
		TemplateID: p.TemplateID, Args: p.Args, ReceivedAt: in.Event.Time,
	}, nil
}

// RecordTalkShare stores a Talk Share delivery once per event key; a retry
// finds it stored and reports reaction.OutcomeDuplicate. The audit detail names the
// custom argument keys but never their values.
func (a *Activities) RecordTalkShare(ctx context.Context, in reaction.StepInput) (reaction.StepResult, error) {
	d, err := shareDelivery(in)
	if err != nil {
		return reaction.StepResult{}, err
	}
	store := a.Talk
	if store == nil {
		// Retryable: a worker deployed without the store can be fixed and the
		// step then completes.
		return reaction.StepResult{}, classify("talk share", errors.New("worker has no talk store configured"), true, 0)
	}
	inserted, err := store.RecordDelivery(ctx, d)
	if err != nil {
		return reaction.StepResult{}, classify("talk share", err, true, 0)
	}
	keys := make([]string, 0, len(d.Args))
	for k := range d.Args {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	detail := map[string]any{"chat_type": d.ChatType, "arg_keys": keys, "inserted": inserted}
	if d.TemplateID != nil {
		detail["template_id"] = *d.TemplateID
	}
	if !inserted {
		return reaction.StepResult{Outcome: reaction.OutcomeDuplicate, Detail: detail}, nil
	}
	return done(detail), nil
}

// RunTalkShareHook is the extension point for a service's own reaction to a
// Talk Share delivery: it calls Activities.TalkShareHook (talk.ShareHook) with
// the step's idempotency key, which stays the same across retries. Without a
// hook it is skipped. An error from the hook is retried by Temporal.
func (a *Activities) RunTalkShareHook(ctx context.Context, in reaction.StepInput) (reaction.StepResult, error) {
	if a.TalkShareHook == nil {
		return skipped("no talk share hook configured"), nil
	}
	d, err := shareDelivery(in)
	if err != nil {
		return reaction.StepResult{}, err
	}
	if err := a.TalkShareHook.OnTalkShare(ctx, in.IdempotencyKey, d); err != nil {
		return reaction.StepResult{}, err
	}
	return done(map[string]any{"ran": true}), nil
}
