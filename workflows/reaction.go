package workflows

import (
	"encoding/json"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/policy"
	"github.com/setflow/setflow/reaction"
)

// Audit outcomes the workflow itself writes (steps report theirs).
const (
	OutcomeReceived = "received"
	OutcomeShadow   = "shadow"
	OutcomeSkipped  = reaction.OutcomeSkipped
	OutcomeFailed   = "failed"
)

// ReactionResult summarises what a reaction did, for operators in the UI.
type ReactionResult struct {
	Events          int   `json:"events"`
	Steps           int   `json:"steps"`
	SessionsRevoked int64 `json:"sessions_revoked"`
}

// Reaction runs the policy's steps for the events of one inbox entry that
// name no user (Talk Share, SSF verification and stream updates) and writes
// the audit trail as it goes; events about a user go through the user's
// stream (UserStream). The plan comes from a local activity, so
// it is recorded in the history and replays the same after a policy change.
func Reaction(ctx workflow.Context, env event.Envelope) (ReactionResult, error) {
	log := workflow.GetLogger(ctx)
	var plans []reaction.PlannedEvent
	lctx := workflow.WithLocalActivityOptions(ctx, workflow.LocalActivityOptions{StartToCloseTimeout: 10 * time.Second})
	if err := localUntilDone(lctx, reaction.PlanReaction, env, &plans); err != nil {
		return ReactionResult{}, err
	}
	if len(plans) != len(env.Events) {
		return ReactionResult{}, temporal.NewNonRetryableApplicationError("plan does not match the events", "BadPlan", nil)
	}
	// Versioned: runs recorded before the completed row existed replay
	// without it (the rule in README, "Changing a workflow").
	completedRow := workflow.GetVersion(ctx, "completed-audit-row", workflow.DefaultVersion, 1) >= 1
	view := newReactionView(ctx, env, plans)
	var res ReactionResult
	for i, ev := range env.Events {
		if ev.Subject.UserID == "" {
			ev.Subject = env.Subject
		}
		r := newRunner(ctx, env.Key, ev, plans[i].SubjectHash)
		r.retryFor = plans[i].RetryFor
		view.watch(r)
		if err := r.event(env, plans[i].Reaction); err != nil {
			return res, err
		}
		if completedRow {
			// Every step is through: the same end marker as a user's
			// stream writes; inbox retention waits for it.
			if err := r.audit(StepCompleted, reaction.OutcomeDone, nil); err != nil {
				return res, err
			}
		}
		res.Events++
		res.Steps += len(plans[i].Reaction.Steps)
		res.SessionsRevoked += r.revoked
	}
	view.finish(res)
	log.Info("reaction done", "event", env.Key, "events", res.Events, "steps", res.Steps)
	return res, nil
}

// event runs one event's reaction.
func (r *runner) event(env event.Envelope, plan policy.Reaction) error {
	if err := r.audit("received", OutcomeReceived, map[string]any{
		"source": string(env.Source), "event_time": r.ev.Time, "shadow": plan.Shadow, "steps": len(plan.Steps),
	}); err != nil {
		return err
	}
	payload := map[string]any{}
	_ = json.Unmarshal(r.ev.Payload, &payload)
	for _, st := range plan.Steps {
		label := r.label(st.Name)
		if !matches(st.When, payload) {
			if err := r.audit(label, OutcomeSkipped, map[string]any{"reason": "condition not met"}); err != nil {
				return err
			}
			continue
		}
		if plan.Shadow {
			if err := r.audit(label, OutcomeShadow, map[string]any{"params": st.Params}); err != nil {
				return err
			}
			continue
		}
		if policy.KindOf(st.Name) != policy.ActivityStep {
			if err := r.audit(label, OutcomeSkipped, map[string]any{"reason": "the event names no user"}); err != nil {
				return err
			}
			continue
		}
		if _, err := r.step(st, label); err != nil {
			return err
		}
	}
	return nil
}

// matches reports whether every `when` field of a step equals the event's.
func matches(when map[string]string, payload map[string]any) bool {
	return policy.Step{When: when}.Matches(payload)
}
