package activities

import (
	"context"
	"errors"
	"strconv"

	"github.com/setflow/setflow/crm"
	"github.com/setflow/setflow/profile"
)

func crmError(what string, err error) error {
	d, _ := crm.RetryAfter(err)
	return classify(what, err, crm.IsRetryable(err), d)
}

// CRMUpsert writes the user's current profile to the CRM, keyed by the Kakao
// user id. The CRM upsert is idempotent by nature, and the idempotency key
// travels with it for adapters that deduplicate.
func (a *Activities) CRMUpsert(ctx context.Context, in StepInput) (StepResult, error) {
	if err := in.requireSubject("crm upsert"); err != nil {
		return StepResult{}, err
	}
	if a.CRM == nil {
		return skipped("crm not configured"), nil
	}
	c := crm.Contact{ExternalID: in.Event.Subject.UserID, Properties: map[string]string{}}
	p, err := a.Profiles.Get(ctx, in.key())
	if err != nil && !errors.Is(err, profile.ErrNotFound) {
		return StepResult{}, err
	}
	if err == nil {
		c.Email, c.Nickname, c.Phone = nullString(p.Email), nullString(p.Nickname), nullString(p.PhoneNumber)
		if p.Linked.Valid {
			c.Properties["kakao_linked"] = strconv.FormatBool(p.Linked.Bool)
		}
		c.Properties["kakao_locked"] = strconv.FormatBool(p.Locked)
	}
	if err := a.CRM.Upsert(ctx, in.IdempotencyKey, c); err != nil {
		return StepResult{}, crmError("crm upsert", err)
	}
	return done(map[string]any{"fields": len(c.Properties)}), nil
}

// CRMDelete deletes the contact (account purged, data purge).
func (a *Activities) CRMDelete(ctx context.Context, in StepInput) (StepResult, error) {
	if err := in.requireSubject("crm delete"); err != nil {
		return StepResult{}, err
	}
	if a.CRM == nil {
		return skipped("crm not configured"), nil
	}
	if err := a.CRM.Delete(ctx, in.IdempotencyKey, in.Event.Subject.UserID); err != nil {
		return StepResult{}, crmError("crm delete", err)
	}
	return done(nil), nil
}

// CRMMarketing sends the marketing consent that a Talk Channel event left in
// place: on after added, off after blocked. It applies only when this event is
// the newest for the user and channel (a late, older event changes nothing),
// and not for statuses with no marketing meaning.
func (a *Activities) CRMMarketing(ctx context.Context, in StepInput) (StepResult, error) {
	if err := in.requireSubject("crm marketing"); err != nil {
		return StepResult{}, err
	}
	if a.CRM == nil {
		return skipped("crm not configured"), nil
	}
	cur, applied, err := a.recordRelationship(ctx, in)
	if err != nil {
		return StepResult{}, err
	}
	if !applied {
		return StepResult{Outcome: OutcomeSuperseded, Detail: map[string]any{"reason": "a newer channel event decides the consent"}}, nil
	}
	if cur.MarketingConsent == nil {
		return skipped("channel status with no marketing meaning"), nil
	}
	on := *cur.MarketingConsent
	if err := a.CRM.SetMarketing(ctx, in.IdempotencyKey, in.Event.Subject.UserID, on); err != nil {
		return StepResult{}, crmError("crm marketing", err)
	}
	return done(map[string]any{"subscribed": on}), nil
}

// crmFieldsForScopes maps withdrawn Kakao scopes to CRM contact fields.
var crmFieldsForScopes = map[string]string{
	"account_email":    crm.FieldEmail,
	"profile":          crm.FieldNickname,
	"profile_nickname": crm.FieldNickname,
	"phone_number":     crm.FieldPhone,
}

// CRMDeleteFields blanks in the CRM the fields whose consent was withdrawn.
func (a *Activities) CRMDeleteFields(ctx context.Context, in StepInput) (StepResult, error) {
	if err := in.requireSubject("crm delete fields"); err != nil {
		return StepResult{}, err
	}
	if a.CRM == nil {
		return skipped("crm not configured"), nil
	}
	var fields []string
	seen := map[string]bool{}
	for _, s := range scopesOf(in.payload()) {
		if f, ok := crmFieldsForScopes[s]; ok && !seen[f] {
			seen[f] = true
			fields = append(fields, f)
		}
	}
	if len(fields) == 0 {
		return skipped("no withdrawn scope maps to a crm field"), nil
	}
	if err := a.CRM.DeleteFields(ctx, in.IdempotencyKey, in.Event.Subject.UserID, fields); err != nil {
		return StepResult{}, crmError("crm delete fields", err)
	}
	return done(map[string]any{"fields": fields}), nil
}
