package workflows

import (
	"encoding/json"
	"fmt"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/setflow/setflow/activities"
	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/policy"
)

// Audit outcomes the workflow itself writes (steps report theirs).
const (
	OutcomeReceived = "received"
	OutcomeShadow   = "shadow"
	OutcomeSkipped  = activities.OutcomeSkipped
	OutcomeFailed   = "failed"
)

// ReactionResult summarises what a reaction did, for operators in the UI.
type ReactionResult struct {
	Events          int   `json:"events"`
	Steps           int   `json:"steps"`
	SessionsRevoked int64 `json:"sessions_revoked"`
}

// onceAcrossSources are reactions that must run once per user although two
// webhooks report the same fact (unlink webhook and OAUTH user-unlinked SET).
var onceAcrossSources = map[string]bool{"user-unlinked": true}

// OnceWindow is how far apart two reports of the same fact may be.
const OnceWindow = time.Hour

// a is only used to name activities; its methods are never called here.
var a *activities.Activities

// Reaction runs the policy's steps for every event of one inbox entry and
// writes the audit trail as it goes. The plan comes from a local activity, so
// it is recorded in the history and replays the same after a policy change.
func Reaction(ctx workflow.Context, env event.Envelope) (ReactionResult, error) {
	log := workflow.GetLogger(ctx)
	var plans []activities.PlannedEvent
	lctx := workflow.WithLocalActivityOptions(ctx, workflow.LocalActivityOptions{StartToCloseTimeout: 10 * time.Second})
	if err := workflow.ExecuteLocalActivity(lctx, a.PlanReaction, env).Get(ctx, &plans); err != nil {
		return ReactionResult{}, err
	}
	if len(plans) != len(env.Events) {
		return ReactionResult{}, temporal.NewNonRetryableApplicationError("plan does not match the events", "BadPlan", nil)
	}
	var res ReactionResult
	for i, ev := range env.Events {
		if ev.Subject.UserID == "" {
			ev.Subject = env.Subject
		}
		r := newRunner(ctx, env.Key, ev, plans[i].SubjectHash)
		if err := r.event(env, plans[i].Reaction); err != nil {
			return res, err
		}
		res.Events++
		res.Steps += len(plans[i].Reaction.Steps)
		res.SessionsRevoked += r.revoked
	}
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
	if onceAcrossSources[r.ev.Name] && r.ev.Subject.UserID != "" && !plan.Shadow {
		claimed, err := r.claim()
		if err != nil {
			return err
		}
		if !claimed {
			return r.audit("claim", activities.OutcomeDuplicate, map[string]any{
				"reason": "another delivery of the same fact for this user already ran the reaction"})
		}
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
		var err error
		switch st.Name {
		case policy.SchedulePurge:
			err = r.schedulePurge(st, label)
		case policy.CancelPurge:
			err = r.cancelPurge(label)
		default:
			_, err = r.step(st, label)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// matches reports whether every `when` field of a step equals the event's.
func matches(when map[string]string, payload map[string]any) bool {
	for k, want := range when {
		got, ok := payload[k]
		if !ok || fmt.Sprint(got) != want {
			return false
		}
	}
	return true
}

func (r *runner) claim() (bool, error) {
	ctx := workflow.WithActivityOptions(r.ctx, auditOptions())
	var claimed bool
	err := workflow.ExecuteActivity(ctx, a.ClaimReaction, activities.ClaimInput{
		Kind: r.ev.Name, EventKey: r.eventKey, SubjectHash: r.subjectHash,
		Issuer: r.ev.Subject.Issuer, UserID: r.ev.Subject.UserID, EventTime: r.ev.Time, Window: OnceWindow,
	}).Get(ctx, &claimed)
	return claimed, err
}

// schedulePurge starts the user's purge workflow, which outlives this one: its
// timer may run for months.
func (r *runner) schedulePurge(st policy.Step, label string) error {
	after, err := time.ParseDuration(st.Params["after"])
	if err != nil {
		after = 0
	}
	cctx := workflow.WithChildOptions(r.ctx, workflow.ChildWorkflowOptions{
		WorkflowID:            PurgeWorkflowID(r.subjectHash),
		ParentClosePolicy:     enums.PARENT_CLOSE_POLICY_ABANDON,
		WorkflowIDReusePolicy: enums.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
	})
	child := workflow.ExecuteChildWorkflow(cctx, Purge, PurgeInput{
		EventKey: r.eventKey, Event: r.ev, SubjectHash: r.subjectHash, After: after,
	})
	outcome, detail := activities.OutcomeDone, map[string]any{"after": after.String()}
	if err := child.GetChildWorkflowExecution().Get(r.ctx, nil); err != nil {
		if !temporal.IsWorkflowExecutionAlreadyStartedError(err) {
			return err
		}
		// One pending purge per user: the earlier unlink's timer stands.
		outcome, detail["reason"] = OutcomeSkipped, "a purge is already scheduled for this user"
	}
	return r.audit(label, outcome, detail)
}

// cancelPurge stops a pending purge: the user linked again.
func (r *runner) cancelPurge(label string) error {
	err := workflow.RequestCancelExternalWorkflow(r.ctx, PurgeWorkflowID(r.subjectHash), "").Get(r.ctx, nil)
	if err != nil {
		// Nothing pending (never scheduled, already ran, or already cancelled).
		return r.audit(label, OutcomeSkipped, map[string]any{"reason": "no pending purge"})
	}
	return r.audit(label, activities.OutcomeDone, nil)
}
