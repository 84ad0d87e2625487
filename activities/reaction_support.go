package activities

import (
	"context"
	"time"

	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/policy"
)

// PlannedEvent is the reaction the policy chose for one event.
type PlannedEvent struct {
	// SubjectHash is the keyed handle of the user, safe for workflow ids and
	// audit rows (a plain hash of a numeric id could be reversed).
	SubjectHash string          `json:"subject_hash"`
	Reaction    policy.Reaction `json:"reaction"`
	// Time is the event time clamped to the configured bounds (Backends.TimeBounds);
	// Clamped says it had to be.
	Time    time.Time `json:"time"`
	Clamped bool      `json:"clamped,omitempty"`
	// ConfirmUnlink says the unlink webhook's revocation waits for Kakao's
	// user API (an admin key is configured): a stale webhook must not end
	// the sessions of a user who linked again.
	ConfirmUnlink bool `json:"confirm_unlink,omitempty"`
	// RetryFor is how long the event's steps retry transient failures
	// before they park (Backends.StepRetryFor; 0: the workflow's default).
	RetryFor time.Duration `json:"retry_for,omitempty"`
	// TestAccount says the event is about a test account (Backends.TestUsers):
	// its Reaction is in shadow for that reason, not the policy's.
	TestAccount bool `json:"test_account,omitempty"`
}

// PlanReaction looks up the policy for each event of an envelope. It runs as a
// local activity so that the workflow records the plan in its history: a
// policy change takes effect for new events without breaking replays.
func (a *Activities) PlanReaction(_ context.Context, env event.Envelope) ([]PlannedEvent, error) {
	p := a.Policy
	if p == nil {
		p = policy.Default()
	}
	out := make([]PlannedEvent, len(env.Events))
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
		out[i] = PlannedEvent{SubjectHash: a.Subjects.Hash(sub.Issuer, sub.UserID), Reaction: r, Time: t, Clamped: clamped,
			ConfirmUnlink: a.Kakao != nil && env.Source == event.SourceUnlink, RetryFor: a.StepRetryFor, TestAccount: test}
	}
	return out, nil
}

// ParkInput marks an event whose step exhausted its retries.
type ParkInput struct {
	EventKey string `json:"event_key"`
	Step     string `json:"step"`
	Reason   string `json:"reason"`
	// WorkflowID is the parked workflow, which `setflow events retry` signals
	// (the reaction itself, or the user's purge).
	WorkflowID string `json:"workflow_id"`
}

// ParkEvent makes a stuck event visible to operators in the inbox (status
// parked, with the failed step and reason); `setflow events retry` re-drives it.
func (a *Activities) ParkEvent(ctx context.Context, in ParkInput) error {
	return a.Parking.Park(ctx, in.EventKey, in.Step+": "+in.Reason, in.WorkflowID)
}

// UnparkEvent marks a parked event as being worked on again.
func (a *Activities) UnparkEvent(ctx context.Context, eventKey string) error {
	return a.Parking.Unpark(ctx, eventKey)
}
