package workflows

import (
	"errors"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/setflow/setflow/activities"
	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/policy"
)

// PurgeInput schedules the data purge of one unlinked user.
type PurgeInput struct {
	EventKey    string        `json:"event_key"`
	Event       event.Event   `json:"event"`
	SubjectHash string        `json:"subject_hash"`
	After       time.Duration `json:"after"`
}

// PurgeResult says what the purge did.
type PurgeResult struct {
	Outcome string `json:"outcome"` // purged, cancelled, skipped
}

// Purge waits out the retention period on a durable timer — it survives worker
// and server restarts — then deletes the user's data unless the user linked
// again. Cancelling the workflow (a new user-linked event does) stops it.
func Purge(ctx workflow.Context, in PurgeInput) (PurgeResult, error) {
	log := workflow.GetLogger(ctx)
	r := newRunner(ctx, in.EventKey, in.Event, in.SubjectHash)
	if in.After > 0 {
		if err := workflow.Sleep(ctx, in.After); err != nil {
			if !temporal.IsCanceledError(err) {
				return PurgeResult{}, err
			}
			// Record the cancellation even though this workflow is being cancelled.
			dctx, _ := workflow.NewDisconnectedContext(ctx)
			r.ctx = dctx
			if err := r.audit("purge", "cancelled", map[string]any{"reason": "the user linked again"}); err != nil {
				return PurgeResult{}, err
			}
			log.Info("purge cancelled", "event", in.EventKey)
			return PurgeResult{Outcome: "cancelled"}, nil
		}
	}
	cutoff := in.Event.Time.UTC().Format(time.RFC3339Nano)
	res, err := r.step(policy.Step{Name: policy.PurgeData, Params: map[string]string{"unlinked_before": cutoff}}, "")
	if err != nil {
		return PurgeResult{}, err
	}
	if res.Outcome != activities.OutcomeDone {
		return PurgeResult{Outcome: "skipped"}, nil
	}
	if _, err := r.step(policy.Step{Name: policy.CRMDelete}, ""); err != nil {
		return PurgeResult{}, err
	}
	return PurgeResult{Outcome: "purged"}, nil
}

var errParkedTooLong = errors.New("parked step was not retried in time")
