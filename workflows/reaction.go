package workflows

import (
	"fmt"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/setflow/setflow/activities"
	"github.com/setflow/setflow/audit"
	"github.com/setflow/setflow/event"
)

// Outcomes written to the audit trail.
const (
	OutcomeReceived = "received"
	OutcomeDone     = "done"
	OutcomeFailed   = "failed"
)

// ReactionResult summarises what a reaction did, for operators in the UI.
type ReactionResult struct {
	Events          int   `json:"events"`
	SessionsRevoked int64 `json:"sessions_revoked"`
}

// a is only used to name activities; its methods are never called here.
var a *activities.Activities

func activityOptions() workflow.ActivityOptions {
	return workflow.ActivityOptions{
		StartToCloseTimeout: 30 * time.Second,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:    time.Second,
			BackoffCoefficient: 2,
			MaximumInterval:    time.Minute,
			MaximumAttempts:    20,
		},
	}
}

// Reaction runs the reaction steps of every event of one inbox entry, and
// writes the audit trail as it goes.
func Reaction(ctx workflow.Context, env event.Envelope) (ReactionResult, error) {
	log := workflow.GetLogger(ctx)
	ctx = workflow.WithActivityOptions(ctx, activityOptions())
	var res ReactionResult
	for _, ev := range env.Events {
		res.Events++
		subject := ev.Subject
		if subject.UserID == "" {
			subject = env.Subject
		}
		rec := func(step, outcome string, detail map[string]any) error {
			return workflow.ExecuteActivity(ctx, a.RecordAudit, audit.Record{
				EventKey:    env.Key,
				EventType:   ev.Type,
				SubjectHash: subject.Hash(),
				Step:        ev.Name + "/" + step,
				Outcome:     outcome,
				Detail:      detail,
			}).Get(ctx, nil)
		}
		if err := rec("received", OutcomeReceived, map[string]any{"source": string(env.Source), "event_time": ev.Time}); err != nil {
			return res, err
		}
		for _, step := range Plan(ev) {
			detail, err := runStep(ctx, env, ev, subject, step, &res)
			outcome := OutcomeDone
			if err != nil {
				outcome = OutcomeFailed
				detail = map[string]any{"error": err.Error()}
			}
			if aerr := rec(string(step), outcome, detail); aerr != nil {
				return res, aerr
			}
			if err != nil {
				log.Error("reaction step failed", "event", env.Key, "step", step, "error", err)
				return res, fmt.Errorf("step %s of %s: %w", step, ev.Name, err)
			}
		}
	}
	log.Info("reaction done", "event", env.Key, "events", res.Events)
	return res, nil
}

func runStep(ctx workflow.Context, env event.Envelope, ev event.Event, subject event.Subject, step Step, res *ReactionResult) (map[string]any, error) {
	key := StepKey(env.Key, ev.Name, string(step))
	switch step {
	case StepRevokeSessions:
		var out activities.RevokeSessionsResult
		err := workflow.ExecuteActivity(ctx, a.RevokeSessions, activities.RevokeSessionsInput{
			IdempotencyKey: key,
			UserID:         subject.UserID,
			CreatedBefore:  ev.Time,
		}).Get(ctx, &out)
		if err != nil {
			return nil, err
		}
		res.SessionsRevoked += out.Revoked
		return map[string]any{"revoked": out.Revoked}, nil
	default:
		return nil, temporal.NewNonRetryableApplicationError("unknown step "+string(step), "UnknownStep", nil)
	}
}
