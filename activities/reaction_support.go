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
	return a.Parking.Park(ctx, in.EventKey, in.Step+": "+in.Reason, in.WorkflowID)
}

// UnparkEvent marks a parked event as being worked on again.
func (a *Activities) UnparkEvent(ctx context.Context, eventKey string) error {
	return a.Parking.Unpark(ctx, eventKey)
}
