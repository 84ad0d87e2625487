package activities

import (
	"context"
	"encoding/json"
	"errors"
	"strings"

	"go.temporal.io/sdk/temporal"

	"github.com/setflow/setflow/reaction"
	"github.com/setflow/setflow/talk"
)

// RecordChannel records the user–channel relationship of a Talk Channel event
// (payload talk.ChannelPayload) unless a newer one is stored, and with it the
// resulting marketing consent: on after "added", off after "blocked",
// unchanged for a status of unknown meaning.
//
// The detail carries the relationship as stored afterwards: applied (false
// when a newer event had already been recorded; the outcome is then
// reaction.OutcomeSuperseded), status, marketing_consent (null while unknown),
// updated_at and channel. A CRM step applies the consent only when applied.
func (a *Activities) RecordChannel(ctx context.Context, in reaction.StepInput) (reaction.StepResult, error) {
	cur, applied, err := a.recordRelationship(ctx, in)
	if err != nil {
		return reaction.StepResult{}, err
	}
	detail := map[string]any{
		"applied": applied, "status": cur.Status, "marketing_consent": cur.MarketingConsent,
		"updated_at": cur.UpdatedAt, "channel": cur.ChannelKey(),
	}
	if !applied {
		return reaction.StepResult{Outcome: reaction.OutcomeSuperseded, Detail: detail}, nil
	}
	return done(detail), nil
}

// recordRelationship applies the event's relationship (idempotent on the event
// key) and returns what is stored and whether this event is it.
func (a *Activities) recordRelationship(ctx context.Context, in reaction.StepInput) (talk.Relationship, bool, error) {
	var p talk.ChannelPayload
	if err := json.Unmarshal(in.Event.Payload, &p); err != nil {
		return talk.Relationship{}, false, classify("talk channel: malformed event payload", err, false, 0)
	}
	sub := in.Event.Subject
	userID, idType := sub.UserID, sub.Format
	if userID == "" {
		userID = p.UserID
	}
	if idType == "" {
		idType = p.IDType
	}
	if userID == "" || (p.ChannelPublicID == "" && p.ChannelUUID == "") {
		return talk.Relationship{}, false, temporal.NewNonRetryableApplicationError(
			"talk channel: the event names no user or no channel", reaction.ErrTypeMissingSubject, errors.New("incomplete payload"))
	}
	store := a.Talk
	if store == nil {
		return talk.Relationship{}, false, classify("talk channel", errors.New("worker has no talk store configured"), true, 0)
	}
	status := strings.ToLower(strings.TrimSpace(p.Event))
	cur, applied, err := store.RecordRelationship(ctx, talk.Relationship{
		Issuer: sub.Issuer, UserID: userID, IDType: idType,
		ChannelPublicID: p.ChannelPublicID, ChannelUUID: p.ChannelUUID,
		Status: status, MarketingConsent: talk.ConsentFor(status),
		UpdatedAt: p.UpdatedAt, EventKey: in.EventKey,
	})
	if err != nil {
		return talk.Relationship{}, false, classify("talk channel", err, true, 0)
	}
	return cur, applied, nil
}
