package activities

import (
	"context"
	"fmt"
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
		out[i] = PlannedEvent{SubjectHash: a.Subjects.Hash(sub.Issuer, sub.UserID), Reaction: r}
	}
	return out, nil
}

// ClaimInput names a reaction that must run once per user even when several
// webhooks report the same fact.
type ClaimInput struct {
	Kind        string        `json:"kind"`
	EventKey    string        `json:"event_key"`
	SubjectHash string        `json:"subject_hash"`
	Issuer      string        `json:"issuer"`
	UserID      string        `json:"user_id"`
	EventTime   time.Time     `json:"event_time"`
	Window      time.Duration `json:"window"`
}

// ClaimReaction reports whether this event runs the reaction. It does not
// when another event claimed the same kind for the same user within the
// window — unless the user linked again after that claim, which makes a new
// unlink a new fact. A retry of the same event keeps its claim.
func (a *Activities) ClaimReaction(ctx context.Context, in ClaimInput) (bool, error) {
	tx, err := a.DB.BeginTxx(ctx, nil)
	if err != nil {
		return false, err
	}
	defer tx.Rollback() //nolint:errcheck
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtext($1))`, in.Kind+"/"+in.SubjectHash); err != nil {
		return false, err
	}
	var prior struct {
		Mine  bool `db:"mine"`
		Other bool `db:"other"`
	}
	err = tx.GetContext(ctx, &prior, `
		SELECT
			EXISTS (SELECT 1 FROM setflow_reaction_claims WHERE kind = $1 AND subject_hash = $2 AND event_key = $3) AS mine,
			EXISTS (
				SELECT 1 FROM setflow_reaction_claims c
				WHERE c.kind = $1 AND c.subject_hash = $2 AND c.event_key <> $3
				  AND c.event_time BETWEEN $4::timestamptz - $5 * interval '1 millisecond' AND $4::timestamptz + $5 * interval '1 millisecond'
				  AND NOT EXISTS (
					SELECT 1 FROM user_profiles p
					WHERE p.issuer = $6 AND p.user_id = $7 AND p.linked AND p.link_changed_at > c.event_time)
			) AS other`,
		in.Kind, in.SubjectHash, in.EventKey, in.EventTime, in.Window.Milliseconds(), in.Issuer, in.UserID)
	if err != nil {
		return false, fmt.Errorf("claim reaction: %w", err)
	}
	if prior.Mine {
		return true, tx.Commit()
	}
	if prior.Other {
		return false, tx.Commit()
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO setflow_reaction_claims (kind, subject_hash, event_key, event_time) VALUES ($1, $2, $3, $4)`,
		in.Kind, in.SubjectHash, in.EventKey, in.EventTime); err != nil {
		return false, fmt.Errorf("claim reaction: %w", err)
	}
	return true, tx.Commit()
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
	reason := in.Step + ": " + in.Reason
	if len(reason) > 500 {
		reason = reason[:500]
	}
	_, err := a.DB.ExecContext(ctx, `UPDATE setflow_inbox SET status = 'parked', last_error = $2, workflow_id = $3 WHERE dedupe_key = $1`,
		in.EventKey, reason, in.WorkflowID)
	return err
}

// UnparkEvent marks a parked event as being worked on again.
func (a *Activities) UnparkEvent(ctx context.Context, eventKey string) error {
	_, err := a.DB.ExecContext(ctx, `UPDATE setflow_inbox SET status = 'dispatched', last_error = NULL WHERE dedupe_key = $1 AND status = 'parked'`, eventKey)
	return err
}
