package workflows

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"

	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/policy"
	"github.com/setflow/setflow/reaction"
	"github.com/setflow/setflow/secevent"
	"github.com/setflow/setflow/talk"
)

// Reaction runs the events of an inbox entry that name no user: Talk Share
// deliveries and the SSF stream's own events. Everything about a user goes
// through UserStream (user_stream_test.go).

// expect builds the timeline one event of a reaction should produce, and the
// steps (activity, label) it should run.
type expect struct {
	name     string
	timeline []string
	runs     [][2]string
}

func expectFor(name string) *expect {
	return &expect{name: name, timeline: []string{"audit " + name + "/received=received"}}
}

// run: the step's activity runs, then its outcome is audited.
func (e *expect) run(activityName, label string) *expect {
	e.timeline = append(e.timeline, activityName, "audit "+e.name+"/"+label+"=done")
	e.runs = append(e.runs, [2]string{activityName, label})
	return e
}

// audit: a row the workflow writes without running a step activity.
func (e *expect) audit(label, outcome string) *expect {
	e.timeline = append(e.timeline, "audit "+e.name+"/"+label+"="+outcome)
	return e
}

// done is the whole timeline of an event that got through: its steps, then
// the completed row.
func (e *expect) done() []string {
	return append(append([]string(nil), e.timeline...), "audit "+e.name+"/"+StepCompleted+"=done")
}

func (e *expect) raw(items ...string) *expect {
	e.timeline = append(e.timeline, items...)
	return e
}

// assertRuns checks that each step ran once with the input the workflow owes
// it: the event, and an idempotency key derived from the event key, the event
// name and the step — distinct per step.
func assertRuns(t *testing.T, envl event.Envelope, ev event.Event, want [][2]string, calls []stepCall) {
	t.Helper()
	require.Len(t, calls, len(want), "step calls")
	seen := map[string]bool{}
	for i, c := range calls {
		act, label := want[i][0], want[i][1]
		require.Equal(t, act, c.Activity)
		// The key format is part of the contract with the back ends'
		// dedupe tables: a change would repeat side effects of in-flight events.
		require.Equal(t, StepKey(envl.Key, ev.Name, label), c.In.IdempotencyKey, "%s idempotency key", act)
		require.Equal(t, envl.Key+"/"+ev.Name+"/"+label, c.In.IdempotencyKey)
		require.False(t, seen[c.In.IdempotencyKey], "idempotency key %s used twice", c.In.IdempotencyKey)
		seen[c.In.IdempotencyKey] = true
		require.Equal(t, envl.Key, c.In.EventKey)
		require.Equal(t, ev.Type, c.In.Event.Type)
		require.Equal(t, ev.Name, c.In.Event.Name)
		require.True(t, ev.Time.Equal(c.In.Event.Time), "event time")
		require.Equal(t, ev.Subject, c.In.Event.Subject)
		require.JSONEq(t, string(ev.Payload), string(c.In.Event.Payload))
		require.Equal(t, TaskQueue, c.TaskQueue, "%s task queue", act)
	}
}

// The default policy's reactions to events that name no user.
func TestReactionDefaultPolicy(t *testing.T) {
	cases := []struct {
		name string
		envl event.Envelope
		want *expect
	}{
		{name: "talk-share", envl: talkShareEnvelope("talk-share:r1"),
			want: expectFor("talk-share").run("RecordTalkShare", "record_talk_share").run("RunTalkShareHook", "talk_share_hook")},
		{name: "verification", envl: ssfEnvelope("jti-verify", "verification", `{"state":"abc"}`),
			want: expectFor("verification")},
		{name: "stream-updated", envl: ssfEnvelope("jti-stream", "stream-updated", `{"status":"enabled"}`),
			want: expectFor("stream-updated")},
		{name: "unknown type", envl: ssfEnvelope("jti-unknown", "something-new", `{"x":1}`),
			want: expectFor("something-new")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, harnessOptions{})
			res, err := h.runReaction(tc.envl)
			require.NoError(t, err)
			require.Equal(t, tc.want.done(), h.timeline)
			ev := tc.envl.Events[0]
			assertRuns(t, tc.envl, ev, tc.want.runs, h.steps)

			wantHash := testHasher.Hash("", "")
			for _, r := range h.audits {
				require.Equal(t, tc.envl.Key, r.EventKey)
				require.Equal(t, ev.Type, r.EventType)
				require.Equal(t, wantHash, r.SubjectHash)
			}
			received := h.auditFor(ev.Name + "/received")
			require.Equal(t, string(tc.envl.Source), received.Detail["source"])
			require.Equal(t, float64(len(tc.want.runs)), received.Detail["steps"])
			require.Equal(t, false, received.Detail["shadow"])
			for _, run := range tc.want.runs {
				require.Equal(t, run[0], h.auditFor(ev.Name + "/" + run[1]).Detail["by"], "audit detail of %s", run[1])
			}
			require.Equal(t, ReactionResult{Events: 1, Steps: len(tc.want.runs)}, res)
			require.Empty(t, h.parks)
			require.Empty(t, h.applies, "a reaction never applies state")
		})
	}
}

// A reaction names no user: a state or CRM step (and a purge) in its policy
// is audited as skipped, and the other steps run.
func TestReactionSkipsStateStepsForUserlessEvents(t *testing.T) {
	p, err := policy.Parse([]byte(`
version: 1
events:
  talk-share:
    steps: [record_talk_share, mark_linked, lock_account, crm_upsert, crm_marketing, schedule_purge, cancel_purge, purge_data, refresh_profile, talk_share_hook]
`))
	require.NoError(t, err)
	h := newHarness(t, harnessOptions{policy: p})
	envl := talkShareEnvelope("talk-share:state")
	res, err := h.runReaction(envl)
	require.NoError(t, err)
	want := expectFor("talk-share").run("RecordTalkShare", "record_talk_share")
	for _, label := range []string{"mark_linked", "lock_account", "crm_upsert", "crm_marketing", "schedule_purge", "cancel_purge", "purge_data", "refresh_profile"} {
		want.audit(label, OutcomeSkipped)
		require.Equal(t, "the event names no user", h.auditFor("talk-share/" + label).Detail["reason"], label)
	}
	want.run("RunTalkShareHook", "talk_share_hook")
	require.Equal(t, want.done(), h.timeline)
	assertRuns(t, envl, envl.Events[0], want.runs, h.steps)
	require.Empty(t, h.applies)
	require.Empty(t, h.syncs)
	require.Empty(t, h.purges)
	require.Equal(t, ReactionResult{Events: 1, Steps: 10}, res)
}

// A step's when-condition compares the event payload: unmet, the step is
// audited as skipped and does not run.
func TestReactionWhenCondition(t *testing.T) {
	p, err := policy.Parse([]byte(`
version: 1
events:
  talk-share:
    steps:
      - record_talk_share: {when: {chat_type: MemoChat}}
      - talk_share_hook: {when: {chat_type: DirectChat}}
      - record_talk_share: {when: {template_id: 1234}}
`))
	require.NoError(t, err)
	h := newHarness(t, harnessOptions{policy: p})
	_, err = h.runReaction(talkShareEnvelope("talk-share:when"))
	require.NoError(t, err)
	require.Equal(t, expectFor("talk-share").run("RecordTalkShare", "record_talk_share").audit("talk_share_hook", OutcomeSkipped).
		run("RecordTalkShare", "record_talk_share#2").done(), h.timeline)
	require.Equal(t, "condition not met", h.auditFor("talk-share/talk_share_hook").Detail["reason"])
	require.Zero(t, h.calls["RunTalkShareHook"])
}

// Shadow mode audits what would run and runs nothing.
func TestReactionShadowMode(t *testing.T) {
	p, err := policy.Parse([]byte(`
version: 1
events:
  talk-share:
    shadow: true
    steps:
      - record_talk_share
      - talk_share_hook: {when: {chat_type: DirectChat}}
      - send_notice: {notice: account-hijacked}
`))
	require.NoError(t, err)
	h := newHarness(t, harnessOptions{policy: p})
	res, err := h.runReaction(talkShareEnvelope("talk-share:shadow"))
	require.NoError(t, err)
	require.Empty(t, h.steps)
	// The condition still applies in shadow: what would not run says so.
	require.Equal(t, expectFor("talk-share").audit("record_talk_share", OutcomeShadow).audit("talk_share_hook", OutcomeSkipped).
		audit("send_notice", OutcomeShadow).done(), h.timeline)
	require.Equal(t, map[string]any{"notice": "account-hijacked"}, h.auditFor("talk-share/send_notice").Detail["params"])
	require.Equal(t, true, h.auditFor("talk-share/received").Detail["shadow"])
	require.Equal(t, ReactionResult{Events: 1, Steps: 3}, res)
}

// A policy that names the same step twice runs both, under distinct labels
// and idempotency keys.
func TestReactionRepeatedStepGetsDistinctKeys(t *testing.T) {
	p, err := policy.Parse([]byte(`
version: 1
events:
  talk-share:
    steps: [record_talk_share, talk_share_hook, record_talk_share, record_talk_share]
`))
	require.NoError(t, err)
	h := newHarness(t, harnessOptions{policy: p})
	envl := talkShareEnvelope("talk-share:rep")
	_, err = h.runReaction(envl)
	require.NoError(t, err)
	want := expectFor("talk-share").run("RecordTalkShare", "record_talk_share").run("RunTalkShareHook", "talk_share_hook").
		run("RecordTalkShare", "record_talk_share#2").run("RecordTalkShare", "record_talk_share#3")
	require.Equal(t, want.done(), h.timeline)
	assertRuns(t, envl, envl.Events[0], want.runs, h.steps)
}

// A step that fails for good parks the event and waits for an operator's
// retry signal; the retried step keeps its idempotency key.
func TestReactionParkAndRetry(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.stepFuncs["RecordTalkShare"] = func(n int, _ reaction.StepInput) (reaction.StepResult, error) {
		if n == 1 {
			return reaction.StepResult{}, temporal.NewNonRetryableApplicationError("talk store refused", reaction.ErrTypePermanent, nil)
		}
		return reaction.StepResult{Outcome: reaction.OutcomeDone}, nil
	}
	envl := talkShareEnvelope("talk-share:park")
	// The operator's CLI sends the event key.
	h.signalRetry(2*time.Hour, 1, envl.Key)
	res, err := h.runReaction(envl)
	require.NoError(t, err)

	require.Equal(t, expectFor("talk-share").
		raw("RecordTalkShare", "audit talk-share/record_talk_share@1=failed", "ParkEvent", "signal", "UnparkEvent").
		run("RecordTalkShare", "record_talk_share").run("RunTalkShareHook", "talk_share_hook").done(), h.timeline)
	require.Equal(t, []reaction.ParkInput{{
		EventKey: envl.Key, Step: "talk-share/record_talk_share", WorkflowID: EventWorkflowID(envl.Key), Reason: h.parks[0].Reason,
	}}, h.parks)
	require.Contains(t, h.parks[0].Reason, "talk store refused")
	require.Contains(t, h.auditFor("talk-share/record_talk_share@1").Detail["error"], "talk store refused")
	require.Equal(t, []string{envl.Key}, h.unparks)

	// A non-retryable error parks at once (one attempt), and the re-run
	// waited for the signal.
	require.Equal(t, int32(1), h.steps[0].Attempt)
	require.Equal(t, h.steps[0].In.IdempotencyKey, h.steps[1].In.IdempotencyKey)
	require.Equal(t, StepKey(envl.Key, "talk-share", "record_talk_share"), h.steps[1].In.IdempotencyKey)
	require.Equal(t, 2*time.Hour, h.steps[1].At.Sub(t0))
	require.Equal(t, ReactionResult{Events: 1, Steps: 2}, res)
}

// A retryable failure is retried by Temporal on a bounded schedule (10
// attempts) before the step parks.
func TestReactionRetryableFailureParksAfterRetries(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.stepFuncs["RunTalkShareHook"] = func(n int, _ reaction.StepInput) (reaction.StepResult, error) {
		if n <= 10 {
			return reaction.StepResult{}, temporal.NewApplicationError("hook down", reaction.ErrTypeUnavailable)
		}
		return reaction.StepResult{Outcome: reaction.OutcomeDone}, nil
	}
	h.signalRetry(24*time.Hour, 1, nil)
	_, err := h.runReaction(talkShareEnvelope("talk-share:retry"))
	require.NoError(t, err)
	require.Equal(t, 11, h.calls["RunTalkShareHook"])
	hooks := h.stepsOf("RunTalkShareHook")
	for i := 0; i < 10; i++ {
		require.Equal(t, int32(i+1), hooks[i].Attempt)
	}
	require.Len(t, h.parks, 1)
	require.Equal(t, OutcomeFailed, h.auditFor("talk-share/talk_share_hook@1").Outcome)
	require.Equal(t, reaction.OutcomeDone, h.auditFor("talk-share/talk_share_hook").Outcome)
}

// Several retry signals sent together are one retry: when the re-run fails
// again, the event parks again and waits for a new signal.
func TestReactionDuplicateRetrySignalsCountAsOne(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.stepFuncs["RecordTalkShare"] = func(n int, _ reaction.StepInput) (reaction.StepResult, error) {
		if n <= 2 {
			return reaction.StepResult{}, temporal.NewNonRetryableApplicationError(fmt.Sprintf("refused %d", n), reaction.ErrTypePermanent, nil)
		}
		return reaction.StepResult{Outcome: reaction.OutcomeDone}, nil
	}
	envl := talkShareEnvelope("talk-share:dup")
	h.signalRetry(time.Hour, 3, envl.Key)
	h.signalRetry(5*time.Hour, 1, envl.Key)
	_, err := h.runReaction(envl)
	require.NoError(t, err)
	require.Equal(t, expectFor("talk-share").raw(
		"RecordTalkShare", "audit talk-share/record_talk_share@1=failed", "ParkEvent",
		"signal", "signal", "signal", "UnparkEvent",
		"RecordTalkShare", "audit talk-share/record_talk_share@2=failed", "ParkEvent",
		"signal", "UnparkEvent").run("RecordTalkShare", "record_talk_share").run("RunTalkShareHook", "talk_share_hook").done(), h.timeline)
	require.Len(t, h.parks, 2)
	require.Equal(t, []string{envl.Key, envl.Key}, h.unparks)
	require.Equal(t, 5*time.Hour, h.steps[2].At.Sub(t0), "the third attempt waited for the second retry")
}

// A retry request that arrives while the park is being recorded (the inbox
// already shows the event parked, so an operator may retry it) is not lost.
func TestReactionRetryWhileParkingIsNotLost(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.parkDelay = time.Minute
	h.stepFuncs["RecordTalkShare"] = func(n int, _ reaction.StepInput) (reaction.StepResult, error) {
		if n == 1 {
			return reaction.StepResult{}, temporal.NewNonRetryableApplicationError("talk store refused", reaction.ErrTypePermanent, nil)
		}
		return reaction.StepResult{Outcome: reaction.OutcomeDone}, nil
	}
	envl := talkShareEnvelope("talk-share:early-retry")
	h.signalRetry(30*time.Second, 1, envl.Key)
	_, err := h.runReaction(envl)
	require.NoError(t, err, "the retry sent while ParkEvent ran was dropped")
	require.Equal(t, 2, h.calls["RecordTalkShare"])
	require.Less(t, h.now().Sub(t0), time.Hour)
}

// Without an operator's retry the parked workflow gives up after ParkTimeout.
func TestReactionParkTimeout(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.stepFuncs["RunTalkShareHook"] = func(int, reaction.StepInput) (reaction.StepResult, error) {
		return reaction.StepResult{}, temporal.NewNonRetryableApplicationError("no hook", reaction.ErrTypePermanent, nil)
	}
	_, err := h.runReaction(talkShareEnvelope("talk-share:timeout"))
	require.Error(t, err)
	require.ErrorContains(t, err, errParkedTooLong.Error())
	require.ErrorContains(t, err, "talk-share/talk_share_hook")
	require.GreaterOrEqual(t, h.now().Sub(t0), ParkTimeout)
	require.Equal(t, 1, h.calls["RunTalkShareHook"])
	require.Len(t, h.parks, 1)
	require.Empty(t, h.unparks)
	require.Equal(t, expectFor("talk-share").run("RecordTalkShare", "record_talk_share").
		raw("RunTalkShareHook", "audit talk-share/talk_share_hook@1=failed", "ParkEvent").timeline, h.timeline)
}

// An envelope with several events: each is planned and runs its own steps
// and audit rows, keyed by its own name; an extension step runs the activity
// of its name.
func TestReactionMultiEventEnvelope(t *testing.T) {
	p, err := policy.Parse([]byte(`
version: 1
events:
  stream-updated:
    steps: [notify_ops, {notify_ops: {channel: pager}}]
`), "notify_ops")
	require.NoError(t, err)
	h := newHarness(t, harnessOptions{policy: p, extra: []string{"notify_ops"}})
	envl := ssfEnvelope("jti-multi", "verification", `{"state":"abc"}`)
	envl.Events = append(envl.Events, event.Event{
		Type: secevent.PrefixSSF + "stream-updated", Name: "stream-updated", Category: "ssf",
		Time: t0.Add(time.Second), Payload: json.RawMessage(`{"status":"paused"}`),
	}, event.Event{
		Type: talk.TypeShare, Name: talk.NameShare, Category: "kakao-webhook",
		Time: t0.Add(2 * time.Second), Payload: json.RawMessage(`{"chat_type":"MemoChat"}`),
	})
	res, err := h.runReaction(envl)
	require.NoError(t, err)

	first := expectFor("verification")
	second := expectFor("stream-updated").run("notify_ops", "notify_ops").run("notify_ops", "notify_ops#2")
	third := expectFor("talk-share").run("RecordTalkShare", "record_talk_share").run("RunTalkShareHook", "talk_share_hook")
	var want []string
	for _, e := range []*expect{first, second, third} {
		want = append(want, e.done()...)
	}
	require.Equal(t, want, h.timeline)
	assertRuns(t, envl, envl.Events[1], second.runs, h.steps[:2])
	assertRuns(t, envl, envl.Events[2], third.runs, h.steps[2:])
	require.Equal(t, map[string]string{"channel": "pager"}, h.steps[1].In.Params)
	require.Equal(t, secevent.PrefixSSF+"stream-updated", h.auditFor("stream-updated/received").EventType)
	require.Equal(t, ReactionResult{Events: 3, Steps: 4}, res)
	for _, r := range h.audits {
		require.True(t, strings.HasPrefix(r.Step, "verification/") || strings.HasPrefix(r.Step, "stream-updated/") ||
			strings.HasPrefix(r.Step, "talk-share/"), r.Step)
	}
}
