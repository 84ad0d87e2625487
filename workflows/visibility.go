package workflows

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/guard"
	"github.com/setflow/setflow/internal/searchattr"
	"github.com/setflow/setflow/policy"
	"github.com/setflow/setflow/reaction"
)

// SignalHoldDecision tells a user's stream that operators decided held work
// (`setflow holds approve|reject`). The payload names the event key, or is
// empty for all of the stream's holds; the decision itself, and who made it,
// are read back from the guard, so a forged or repeated signal decides nothing.
const SignalHoldDecision = "hold-decision"

// holdRecheck is how often a held event asks the guard again, in case a
// decision's signal was lost.
const holdRecheck = 15 * time.Minute

// Outcomes of the blast-radius guard in the audit trail.
const (
	OutcomeHeld     = "held"
	OutcomeRejected = "rejected"
)

// Search attribute values kept small and bounded: a stream lists at most this
// many distinct event types, categories and webhooks.
const attrListLimit = 20

// shown is what the workflow last told Temporal, to upsert only changes.
type shown struct {
	outcome                    string
	types, categories, webhook int
	details                    string
}

// tally collects one event's step outcomes for its overall outcome.
type tally struct{ seen map[string]bool }

func (t *tally) result() string {
	for _, o := range []string{OutcomeRejected, OutcomeShadow, "done", "superseded"} {
		if t.seen[o] {
			return o
		}
	}
	return "done"
}

func addBounded(list []string, v string) []string {
	if v == "" || slices.Contains(list, v) || len(list) >= attrListLimit {
		return list
	}
	return append(list, v)
}

// observeEvent records an event's type, category and webhook for search.
func (s *stream) observeEvent(env event.Envelope, ev event.Event) {
	if !s.ops {
		return
	}
	s.types = addBounded(s.types, ev.Name)
	s.categories = addBounded(s.categories, ev.Category)
	s.webhooks = addBounded(s.webhooks, string(env.Source))
	if _, ok := s.tallies[env.Key]; !ok {
		s.tallies[env.Key] = &tally{seen: map[string]bool{}}
	}
	s.refresh()
}

// observeOutcome follows an event's audit rows; its completed row sets the
// stream's latest outcome.
func (s *stream) observeOutcome(key, step, outcome string) {
	t := s.tallies[key]
	if t == nil {
		return // a CRM sync or a purge run: not an event of this run
	}
	if step == StepCompleted {
		s.last = t.result()
		delete(s.tallies, key)
		s.refresh()
		return
	}
	switch outcome {
	case OutcomeReceived, OutcomeFailed, OutcomeHeld, "approved":
		// received and decision rows, and failed attempts (a step that gives
		// up is reported by failed)
	default:
		t.seen[outcome] = true
	}
}

// failed records that an event's work gave up.
func (s *stream) failed(key string) {
	delete(s.tallies, key)
	s.last = OutcomeFailed
	s.refresh()
}

// outcome is the SetflowOutcome value: what waits on an operator first.
func (s *stream) outcome() string {
	switch {
	case len(s.held) > 0:
		return OutcomeHeld
	case len(s.parked) > 0:
		return "parked"
	case s.running > 0 || len(s.queue) > 0 || s.syncRunning:
		return "running"
	case s.last != "":
		return s.last
	}
	return "done"
}

func (s *stream) upsert(u ...temporal.SearchAttributeUpdate) {
	if err := workflow.UpsertTypedSearchAttributes(s.ctx, u...); err != nil {
		workflow.GetLogger(s.ctx).Error("user stream: search attributes not set", "error", err)
	}
}

// refresh tells Temporal what changed in the operator's view: search
// attributes and the current details shown in the UI.
func (s *stream) refresh() {
	if !s.ops {
		return
	}
	var u []temporal.SearchAttributeUpdate
	if o := s.outcome(); o != s.shown.outcome {
		s.shown.outcome = o
		u = append(u, searchattr.Outcome.ValueSet(o))
	}
	if len(s.types) != s.shown.types {
		s.shown.types = len(s.types)
		u = append(u, searchattr.EventType.ValueSet(slices.Clone(s.types)))
	}
	if len(s.categories) != s.shown.categories {
		s.shown.categories = len(s.categories)
		u = append(u, searchattr.Category.ValueSet(slices.Clone(s.categories)))
	}
	if len(s.webhooks) != s.shown.webhook {
		s.shown.webhook = len(s.webhooks)
		u = append(u, searchattr.Webhook.ValueSet(slices.Clone(s.webhooks)))
	}
	if len(u) > 0 {
		s.upsert(u...)
	}
	if d := s.details(); d != s.shown.details {
		s.shown.details = d
		workflow.SetCurrentDetails(s.ctx, d)
	}
}

// details is the stream's current state for the UI (markdown, encoded by the
// payload codec; still no personal data: keys, step names and counts).
func (s *stream) details() string {
	var b strings.Builder
	fmt.Fprintf(&b, "**%s**", s.outcome())
	if len(s.types) > 0 {
		fmt.Fprintf(&b, " · events: %s", strings.Join(s.types, ", "))
	}
	b.WriteString("\n\n")
	if len(s.held) > 0 || len(s.parked) > 0 {
		b.WriteString("Waiting on an operator:\n\n")
		for _, k := range slices.Sorted(maps.Keys(s.held)) {
			fmt.Fprintf(&b, "- held: `%s` (%s): destructive steps wait for `setflow holds approve|reject %s`\n", k, s.held[k], k)
		}
		for _, k := range slices.Sorted(maps.Keys(s.parked)) {
			step := s.parkedStep[k]
			if step == "" {
				step = "a step"
			}
			fmt.Fprintf(&b, "- parked: `%s` at %s: `setflow events retry %s`\n", k, step, k)
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "Queued %d · running %d", len(s.queue), s.running)
	switch {
	case s.syncRunning:
		b.WriteString(" · CRM sync running")
	case s.syncPending:
		b.WriteString(" · CRM sync pending")
	}
	if s.purge != nil {
		fmt.Fprintf(&b, " · purge due %s", s.purge.Due.UTC().Format(time.RFC3339))
	}
	b.WriteString("\n\nQuery `state` for the full status.")
	return b.String()
}

// destructiveSteps are the policy steps of an event the guard must admit.
func destructiveSteps(steps []policy.Step, payload map[string]any) []string {
	var out []string
	for _, st := range steps {
		if policy.Destructive(st.Name) && matches(st.When, payload) {
			out = append(out, st.Name)
		}
	}
	return out
}

// admit asks the blast-radius guard about an event's destructive steps,
// retrying while the database is away.
func (s *stream) admit(ctx workflow.Context, key string, ev event.Event, steps []string) (guard.Verdict, error) {
	var v guard.Verdict
	actx := workflow.WithActivityOptions(ctx, withSummary(applyOptions(), "blast-radius guard: "+ev.Name))
	err := workflow.ExecuteActivity(actx, reaction.AdmitDestructive, guard.Request{
		EventKey: key, SubjectHash: s.hash, EventName: ev.Name, Steps: steps,
		WorkflowID: workflow.GetInfo(ctx).WorkflowExecution.ID,
	}).Get(actx, &v)
	return v, err
}

func withSummary(o workflow.ActivityOptions, summary string) workflow.ActivityOptions {
	o.Summary = summary
	return o
}

// receiveHoldDecisions counts operators' decision signals.
func (s *stream) receiveHoldDecisions(ctx workflow.Context) {
	ch := workflow.GetSignalChannel(ctx, SignalHoldDecision)
	for {
		var key string
		ch.Receive(ctx, &key)
		if key == "" {
			s.holdAll++
		} else {
			s.holdKey[key]++
		}
	}
}

func (s *stream) holdSignals(key string) int { return s.holdAll + s.holdKey[key] }

// holdEvent waits for an operator's decision on an event the guard held, then
// runs it (approved) or audits its steps rejected. The whole event waits, not
// only its destructive steps: a lock or an unlink is a state change, and a
// notice about work that may never run would mislead the user. The user's
// later events go on meanwhile: the state machine decides by event time.
func (s *stream) holdEvent(ctx workflow.Context, env event.Envelope, applyKey string, ev event.Event,
	plan reaction.PlannedEvent, labels []string, payload map[string]any, destructive []string, v guard.Verdict) {
	log := workflow.GetLogger(ctx)
	r := s.newRunner(ctx, env.Key, ev)
	if v.Decision == guard.Held {
		if err := r.audit("hold", OutcomeHeld, map[string]any{"steps": destructive, "reason": v.Reason}); err != nil {
			log.Error("audit failed", "error", err)
			return
		}
		s.held[applyKey] = ev.Name
		s.refresh()
		for v.Decision == guard.Held {
			before := s.holdSignals(env.Key)
			_, _ = workflow.AwaitWithOptions(ctx, workflow.AwaitOptions{Timeout: holdRecheck,
				TimerOptions: workflow.TimerOptions{Summary: "held: waiting for an operator's decision"}},
				func() bool { return s.holdSignals(env.Key) > before })
			var err error
			if v, err = s.admit(ctx, env.Key, ev, destructive); err != nil {
				log.Error("user stream: held event gave up", "event", env.Key, "error", err)
				delete(s.held, applyKey)
				s.failed(env.Key)
				return
			}
		}
		delete(s.held, applyKey)
	}
	detail := map[string]any{"by": v.By}
	if v.Note != "" {
		detail["note"] = v.Note
	}
	if err := r.audit("decision", string(v.Decision), detail); err != nil {
		log.Error("audit failed", "error", err)
		return
	}
	if v.Decision != guard.Approved {
		for _, label := range labels {
			if err := r.audit(label, OutcomeRejected, map[string]any{"reason": "an operator rejected the held event"}); err != nil {
				log.Error("audit failed", "error", err)
				return
			}
		}
		_ = r.audit(StepCompleted, "done", nil)
		return
	}
	s.refresh()
	if err := s.act(ctx, env, applyKey, ev, plan, labels, payload); err != nil {
		log.Error("user stream: approved event not processed", "event", env.Key, "error", err)
		s.failed(env.Key)
	}
}
