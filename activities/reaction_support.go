package activities

import (
	"context"

	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/policy"
	"github.com/setflow/setflow/reaction"
)

// PlanReaction looks up the policy for each event of an envelope. It runs as a
// local activity so that the workflow records the plan in its history: a
// policy change takes effect for new events without breaking replays.
func (a *Activities) PlanReaction(_ context.Context, env event.Envelope) ([]reaction.PlannedEvent, error) {
	p := a.Policy
	if p == nil {
		p = policy.Default()
	}
	out := make([]reaction.PlannedEvent, len(env.Events))
	for i, ev := range env.Events {
		sub := ev.Subject
		if sub.UserID == "" {
			sub = env.Subject
		}
		r := p.For(ev.Type, ev.Name)
		steps := make([]policy.Step, len(r.Steps))
		for j, st := range r.Steps {
			steps[j] = st
			if st.Name == policy.SchedulePurge && st.Params["after"] == "" {
				steps[j].Params = map[string]string{"after": a.PurgeAfter.String()}
			}
		}
		r.Steps = steps
		test := a.TestUsers.Has(sub.UserID)
		if test {
			// A test account: audited like any other, acted on never. The
			// plan is recorded in the workflow's history, so the stream's
			// existing shadow path runs it (no state change, no step).
			r.Shadow = true
		}
		t, clamped := a.TimeBounds.Clamp(ev.Time, env.IssuedAt, env.ReceivedAt)
		out[i] = reaction.PlannedEvent{SubjectHash: a.Subjects.Hash(sub.Issuer, sub.UserID), Reaction: r, Time: t, Clamped: clamped,
			ConfirmUnlink: a.Kakao != nil && env.Source == event.SourceUnlink, RetryFor: a.StepRetryFor, TestAccount: test}
	}
	return out, nil
}

// ParkEvent makes a stuck event visible to operators in the inbox (status
// parked, with the failed step and reason); `setflow events retry` re-drives it.
func (a *Activities) ParkEvent(ctx context.Context, in reaction.ParkInput) error {
	reason := in.Step + ": " + in.Reason
	if len(reason) > 500 {
		reason = reason[:500]
	}
	res, err := a.DB.ExecContext(ctx, `UPDATE setflow_inbox SET status = 'parked', last_error = $2, workflow_id = $3 WHERE dedupe_key = $1`,
		in.EventKey, reason, in.WorkflowID)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n > 0 {
		return nil
	}
	// The entry is gone (pruned before it was guarded, or a key with no
	// entry of its own): a placeholder keeps the parked step listed and
	// retryable. Its raw body is empty; the audit trail has the rest.
	_, err = a.DB.ExecContext(ctx, `
		INSERT INTO setflow_inbox (dedupe_key, source, raw, envelope, status, last_error, workflow_id)
		VALUES ($1, 'parked', '', jsonb_build_object('key', $1::text), 'parked', $2, $3)
		ON CONFLICT (dedupe_key) DO UPDATE SET status = 'parked', last_error = EXCLUDED.last_error, workflow_id = EXCLUDED.workflow_id`,
		in.EventKey, reason, in.WorkflowID)
	return err
}

// UnparkEvent marks a parked event as being worked on again.
func (a *Activities) UnparkEvent(ctx context.Context, eventKey string) error {
	_, err := a.DB.ExecContext(ctx, `UPDATE setflow_inbox SET status = 'dispatched', last_error = NULL WHERE dedupe_key = $1 AND status = 'parked'`, eventKey)
	return err
}
