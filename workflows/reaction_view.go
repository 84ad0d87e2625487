package workflows

import (
	"fmt"
	"strings"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/internal/searchattr"
	"github.com/setflow/setflow/reaction"
)

// ReactionStatus is what a reaction's state query answers (no personal data).
type ReactionStatus struct {
	EventKey string `json:"event_key"`
	Events   int    `json:"events"`
	Steps    int    `json:"steps"`
	// Done counts the steps audited so far.
	Done    int    `json:"done"`
	Parked  string `json:"parked,omitempty"`
	Outcome string `json:"outcome"`
}

// reactionView keeps a reaction's search attributes, current details and
// state query (the operators' view; the stream has its own in visibility.go).
type reactionView struct {
	ctx    workflow.Context
	on     bool
	status ReactionStatus
	shadow bool
}

func newReactionView(ctx workflow.Context, env event.Envelope, plans []reaction.PlannedEvent) *reactionView {
	v := &reactionView{ctx: ctx, status: ReactionStatus{EventKey: env.Key, Events: len(env.Events), Outcome: "running"}}
	var names, categories []string
	for i, ev := range env.Events {
		names = addBounded(names, ev.Name)
		categories = addBounded(categories, ev.Category)
		v.status.Steps += len(plans[i].Reaction.Steps)
		v.shadow = v.shadow || plans[i].Reaction.Shadow
	}
	if err := workflow.SetQueryHandler(ctx, QueryState, func() (ReactionStatus, error) { return v.status, nil }); err != nil {
		workflow.GetLogger(ctx).Error("reaction: no state query", "error", err)
	}
	// Versioned: search attributes are commands that older runs lack.
	v.on = workflow.GetVersion(ctx, "operators", workflow.DefaultVersion, 1) >= 1
	if !v.on {
		return v
	}
	v.upsert(searchattr.EventType.ValueSet(names), searchattr.Category.ValueSet(categories),
		searchattr.Webhook.ValueSet([]string{string(env.Source)}), searchattr.Outcome.ValueSet("running"))
	v.details(fmt.Sprintf("**running** · %s · %d steps", strings.Join(names, ", "), v.status.Steps))
	return v
}

func (v *reactionView) upsert(u ...temporal.SearchAttributeUpdate) {
	if err := workflow.UpsertTypedSearchAttributes(v.ctx, u...); err != nil {
		workflow.GetLogger(v.ctx).Error("reaction: search attributes not set", "error", err)
	}
}

func (v *reactionView) details(d string) {
	if v.on {
		workflow.SetCurrentDetails(v.ctx, d)
	}
}

// watch follows a runner's audit rows and parks.
func (v *reactionView) watch(r *runner) {
	r.onAudit = func(step, outcome string) {
		if outcome != OutcomeReceived && outcome != OutcomeFailed && step != StepCompleted && !strings.Contains(step, "@") {
			v.status.Done++
		}
		if v.status.Parked != "" && outcome != OutcomeFailed {
			v.status.Parked, v.status.Outcome = "", "running"
			if v.on {
				v.upsert(searchattr.Outcome.ValueSet("running"))
				v.details("**running**")
			}
		}
	}
	r.onPark = func(step string) {
		v.status.Parked, v.status.Outcome = step, "parked"
		if v.on {
			v.upsert(searchattr.Outcome.ValueSet("parked"))
			v.details(fmt.Sprintf("**parked** at %s: `setflow events retry %s`", step, v.status.EventKey))
		}
	}
}

func (v *reactionView) finish(res ReactionResult) {
	v.status.Outcome = "done"
	if v.shadow {
		v.status.Outcome = OutcomeShadow
	}
	if v.on {
		v.upsert(searchattr.Outcome.ValueSet(v.status.Outcome))
		v.details(fmt.Sprintf("**%s** · %d events · %d steps", v.status.Outcome, res.Events, res.Steps))
	}
}
