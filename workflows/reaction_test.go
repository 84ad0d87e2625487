package workflows

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"

	"github.com/setflow/setflow/activities"
	"github.com/setflow/setflow/audit"
	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/policy"
	"github.com/setflow/setflow/secevent"
	"github.com/setflow/setflow/talk"
)

// These tests run the Reaction and Purge workflows in the SDK's test
// environment: PlanReaction (a pure local activity) runs for real against the
// policy under test, every other activity is a recording mock, and time is
// skipped, so timers of days take no time.

const (
	testIssuer = "https://kauth.kakao.com"
	testUserID = "4242424242"
	// unlinkEventType is ingress.UnlinkEventType (the unlink webhook).
	unlinkEventType = "kakao:unlink-webhook"
)

var (
	testHasher  = audit.SubjectHasher{Key: []byte("setflow-workflow-tests")}
	testSubject = event.Subject{Issuer: testIssuer, UserID: testUserID, Format: "kakao_user_id"}
	testHash    = testHasher.Hash(testIssuer, testUserID)
	// t0 is when the test events happened; nanoseconds make RFC 3339 cut-offs exact.
	t0 = time.Date(2025, 3, 4, 5, 6, 7, 890123456, time.UTC)
)

// stepActivityNames are the activities the built-in steps run.
var stepActivityNames = []string{
	"RevokeSessions", "KakaoLogout", "LockAccount", "UnlockAccount", "RequireReauth",
	"MarkLinked", "MarkUnlinked", "RefreshProfile", "UpdateConsents", "UpdateIdentifier",
	"CRMUpsert", "CRMDelete", "CRMMarketing", "CRMDeleteFields", "SendNotice", "PurgeData",
	"RecordChannel", "RecordTalkShare", "RunTalkShareHook",
}

// quietLogger drops the SDK's chatter; the tests assert what ran, not logs.
type quietLogger struct{}

func (quietLogger) Debug(string, ...any) {}
func (quietLogger) Info(string, ...any)  {}
func (quietLogger) Warn(string, ...any)  {}
func (quietLogger) Error(string, ...any) {}

// stepCall is one attempt of a step activity.
type stepCall struct {
	Activity  string
	In        activities.StepInput
	TaskQueue string
	Attempt   int32
	At        time.Time
}

// childStart is one child workflow the reaction started.
type childStart struct {
	Type string
	ID   string
	In   PurgeInput
}

type stepFunc func(call int, in activities.StepInput) (activities.StepResult, error)

// harness records, in order, everything the workflow under test did.
type harness struct {
	t   *testing.T
	env *testsuite.TestWorkflowEnvironment

	mu       sync.Mutex
	timeline []string // activity names, "audit <step>=<outcome>", "child ...", "cancel ...", "signal"
	steps    []stepCall
	audits   []audit.Record
	claims   []activities.ClaimInput
	parks    []activities.ParkInput
	unparks  []string
	children []childStart
	cancels  []string

	// behaviour of the mocks, set before running
	stepFuncs   map[string]stepFunc
	calls       map[string]int
	claimResult bool
	cancelErr   error
}

type harnessOptions struct {
	policy *policy.Policy
	// realPurge runs the Purge child for real instead of mocking it.
	realPurge  bool
	purgeAfter time.Duration
}

func newHarness(t *testing.T, opts harnessOptions) *harness {
	t.Helper()
	var suite testsuite.WorkflowTestSuite
	suite.SetLogger(quietLogger{})
	env := suite.NewTestWorkflowEnvironment()
	h := &harness{t: t, env: env, stepFuncs: map[string]stepFunc{}, calls: map[string]int{}, claimResult: true,
		cancelErr: errors.New("unknown external workflow execution")}

	env.RegisterWorkflow(Reaction)
	env.RegisterWorkflow(Purge)
	env.RegisterActivity(&activities.Activities{Backends: activities.Backends{
		Policy: opts.policy, Subjects: testHasher, PurgeAfter: opts.purgeAfter,
	}})

	for _, name := range stepActivityNames {
		name := name
		env.OnActivity(name, mock.Anything, mock.Anything).Return(
			func(ctx context.Context, in activities.StepInput) (activities.StepResult, error) {
				return h.step(ctx, name, in)
			})
	}
	env.OnActivity("RecordAudit", mock.Anything, mock.Anything).Return(func(_ context.Context, r audit.Record) error {
		h.mu.Lock()
		defer h.mu.Unlock()
		// Audit is a local activity: the test environment hands over the Go
		// value itself. Round-trip the detail through JSON as the audit store
		// does, so assertions see what is stored.
		if r.Detail != nil {
			b, err := json.Marshal(r.Detail)
			if err != nil {
				return err
			}
			r.Detail = nil
			if err := json.Unmarshal(b, &r.Detail); err != nil {
				return err
			}
		}
		h.audits = append(h.audits, r)
		h.timeline = append(h.timeline, "audit "+r.Step+"="+r.Outcome)
		return nil
	})
	env.OnActivity("ClaimReaction", mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.ClaimInput) (bool, error) {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.claims = append(h.claims, in)
		h.timeline = append(h.timeline, "ClaimReaction")
		return h.claimResult, nil
	})
	env.OnActivity("ParkEvent", mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.ParkInput) error {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.parks = append(h.parks, in)
		h.timeline = append(h.timeline, "ParkEvent")
		return nil
	})
	env.OnActivity("UnparkEvent", mock.Anything, mock.Anything).Return(func(_ context.Context, key string) error {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.unparks = append(h.unparks, key)
		h.timeline = append(h.timeline, "UnparkEvent")
		return nil
	})
	env.OnRequestCancelExternalWorkflow(mock.Anything, mock.Anything, mock.Anything).Return(func(_, workflowID, _ string) error {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.cancels = append(h.cancels, workflowID)
		h.timeline = append(h.timeline, "cancel "+workflowID)
		return h.cancelErr
	})
	if !opts.realPurge {
		env.OnWorkflow(Purge, mock.Anything, mock.Anything).Return(PurgeResult{Outcome: "purged"}, nil)
	}
	env.SetOnChildWorkflowStartedListener(func(info *workflow.Info, _ workflow.Context, args converter.EncodedValues) {
		var in PurgeInput
		require.NoError(t, args.Get(&in))
		h.mu.Lock()
		defer h.mu.Unlock()
		h.children = append(h.children, childStart{Type: info.WorkflowType.Name, ID: info.WorkflowExecution.ID, In: in})
		h.timeline = append(h.timeline, "child "+info.WorkflowType.Name+" "+info.WorkflowExecution.ID)
	})
	return h
}

// step is every step activity's mock: it records the call, then answers with
// the function set for the activity, else "done" with a detail naming it.
func (h *harness) step(ctx context.Context, name string, in activities.StepInput) (activities.StepResult, error) {
	info := activity.GetInfo(ctx)
	h.mu.Lock()
	h.calls[name]++
	n := h.calls[name]
	h.steps = append(h.steps, stepCall{Activity: name, In: in, TaskQueue: info.TaskQueue, Attempt: info.Attempt, At: h.env.Now()})
	h.timeline = append(h.timeline, name)
	f := h.stepFuncs[name]
	h.mu.Unlock()
	if f != nil {
		return f(n, in)
	}
	detail := map[string]any{"by": name}
	if name == "RevokeSessions" {
		detail["revoked"] = 2.0
	}
	return activities.StepResult{Outcome: activities.OutcomeDone, Detail: detail}, nil
}

// signalRetry sends the retry signal after d (recorded in the timeline).
func (h *harness) signalRetry(d time.Duration, times int) {
	h.env.RegisterDelayedCallback(func() {
		for i := 0; i < times; i++ {
			h.mu.Lock()
			h.timeline = append(h.timeline, "signal")
			h.mu.Unlock()
			h.env.SignalWorkflow(SignalRetry, nil)
		}
	}, d)
}

// runReaction runs the Reaction workflow for env to its end.
func (h *harness) runReaction(envl event.Envelope) (ReactionResult, error) {
	h.t.Helper()
	h.env.SetStartWorkflowOptions(client.StartWorkflowOptions{ID: EventWorkflowID(envl.Key), TaskQueue: TaskQueue})
	h.env.ExecuteWorkflow(Reaction, envl)
	require.True(h.t, h.env.IsWorkflowCompleted(), "workflow did not complete")
	if err := h.env.GetWorkflowError(); err != nil {
		return ReactionResult{}, err
	}
	var res ReactionResult
	require.NoError(h.t, h.env.GetWorkflowResult(&res))
	return res, nil
}

func (h *harness) auditFor(step string) audit.Record {
	h.t.Helper()
	for _, r := range h.audits {
		if r.Step == step {
			return r
		}
	}
	h.t.Fatalf("no audit record for %s in %v", step, h.timeline)
	return audit.Record{}
}

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

func (e *expect) raw(items ...string) *expect {
	e.timeline = append(e.timeline, items...)
	return e
}

// setEnvelope is a one-event SET delivery, as the ingress stores it.
func setEnvelope(key, eventType, payload string) event.Envelope {
	cat := strings.ToLower(string(secevent.CategoryOf(eventType)))
	return event.Envelope{
		Key: key, Source: event.SourceSET, Subject: testSubject, IssuedAt: t0, ReceivedAt: t0.Add(time.Second), TxnID: "txn-1",
		Events: []event.Event{{
			Type: eventType, Name: secevent.EventName(eventType), Category: cat,
			Subject: testSubject, Time: t0, Payload: json.RawMessage(payload),
		}},
	}
}

const subjectPayload = `{"subject":{"format":"iss_sub","iss":"https://kauth.kakao.com","sub":"4242424242"}`

func payloadWith(extra string) string {
	if extra == "" {
		return subjectPayload + "}"
	}
	return subjectPayload + "," + extra + "}"
}

func unlinkEnvelope(key string) event.Envelope {
	return event.Envelope{
		Key: key, Source: event.SourceUnlink, Subject: testSubject, IssuedAt: t0, ReceivedAt: t0,
		Events: []event.Event{{
			Type: unlinkEventType, Name: "user-unlinked", Category: "kakao-webhook", Subject: testSubject, Time: t0,
			Payload: json.RawMessage(`{"app_id":"1234","referrer_type":"UNLINK_FROM_APPS"}`),
		}},
	}
}

func talkChannelEnvelope(key, status string) event.Envelope {
	sub := event.Subject{Issuer: testIssuer, UserID: testUserID, Format: "app_user_id"}
	return event.Envelope{
		Key: key, Source: event.SourceTalkChannel, Subject: sub, IssuedAt: t0, ReceivedAt: t0,
		Events: []event.Event{{
			Type: talk.TypeChannel, Name: talk.NameChannelPrefix + status, Category: "kakao-webhook", Subject: sub, Time: t0,
			Payload: json.RawMessage(`{"event":"` + status + `","id":"4242424242","id_type":"app_user_id","channel_public_id":"_ZeUTxl"}`),
		}},
	}
}

func talkShareEnvelope(key string) event.Envelope {
	return event.Envelope{
		Key: key, Source: event.SourceTalkShare, IssuedAt: t0, ReceivedAt: t0,
		Events: []event.Event{{
			Type: talk.TypeShare, Name: talk.NameShare, Category: "kakao-webhook", Time: t0,
			Payload: json.RawMessage(`{"chat_type":"MemoChat","template_id":1234,"args":{"order":"A-1"}}`),
		}},
	}
}

// assertRuns checks that each step ran once with the input the workflow owes
// it: the event, and an idempotency key derived from the event key, the event
// name and the step — distinct per step.
func assertRuns(t *testing.T, h *harness, envl event.Envelope, ev event.Event, want [][2]string, calls []stepCall) {
	t.Helper()
	require.Len(t, calls, len(want), "step calls")
	seen := map[string]bool{}
	for i, c := range calls {
		act, label := want[i][0], want[i][1]
		require.Equal(t, act, c.Activity)
		wantKey := StepKey(envl.Key, ev.Name, label)
		require.Equal(t, wantKey, c.In.IdempotencyKey, "%s idempotency key", act)
		// The key format is part of the contract with the back ends'
		// dedupe tables: a change would repeat side effects of in-flight events.
		require.Equal(t, envl.Key+"/"+ev.Name+"/"+label, c.In.IdempotencyKey)
		require.False(t, seen[c.In.IdempotencyKey], "idempotency key %s used twice", c.In.IdempotencyKey)
		seen[c.In.IdempotencyKey] = true
		require.Equal(t, envl.Key, c.In.EventKey)
		require.Equal(t, ev.Type, c.In.Event.Type)
		require.Equal(t, ev.Name, c.In.Event.Name)
		require.True(t, ev.Time.Equal(c.In.Event.Time), "event time")
		require.Equal(t, ev.Subject, c.In.Event.Subject)
		require.JSONEq(t, string(ev.Payload), string(c.In.Event.Payload))
		wantQueue := TaskQueue
		if strings.HasPrefix(act, "CRM") {
			wantQueue = CRMTaskQueue
		}
		require.Equal(t, wantQueue, c.TaskQueue, "%s task queue", act)
	}
}

type reactionCase struct {
	name   string
	envl   event.Envelope
	want   *expect
	params map[string]map[string]string // activity -> params it must receive
	// revoked is the sessions the result reports (2 per revoke_sessions).
	revoked int64
	child   bool
}

func defaultPolicyCases() []reactionCase {
	oauth := func(n string) string { return secevent.PrefixOAuth + n }
	risc := func(n string) string { return secevent.PrefixRISC + n }
	caep := func(n string) string { return secevent.PrefixCAEP + n }
	cancel := "cancel " + PurgeWorkflowID(testHash)
	child := "child Purge " + PurgeWorkflowID(testHash)
	return []reactionCase{
		{name: "user-linked", envl: setEnvelope("jti-linked", oauth("user-linked"), payloadWith("")),
			want: expectFor("user-linked").run("MarkLinked", "mark_linked").
				raw(cancel).audit("cancel_purge", "skipped").run("CRMUpsert", "crm_upsert")},
		{name: "user-unlinked (SET)", envl: setEnvelope("jti-unlinked", oauth("user-unlinked"), payloadWith("")),
			want: expectFor("user-unlinked").raw("ClaimReaction").run("RevokeSessions", "revoke_sessions").
				run("MarkUnlinked", "mark_unlinked").run("CRMUpsert", "crm_upsert").raw(child).audit("schedule_purge", "done"),
			revoked: 2, child: true},
		{name: "user-unlinked (unlink webhook)", envl: unlinkEnvelope("unlink:0a1b2c"),
			want: expectFor("user-unlinked").raw("ClaimReaction").run("RevokeSessions", "revoke_sessions").
				run("MarkUnlinked", "mark_unlinked").run("CRMUpsert", "crm_upsert").raw(child).audit("schedule_purge", "done"),
			revoked: 2, child: true},
		{name: "user-scope-consent", envl: setEnvelope("jti-consent", oauth("user-scope-consent"), payloadWith(`"scopes":["talk_message"]`)),
			want: expectFor("user-scope-consent").run("UpdateConsents", "update_consents").run("CRMUpsert", "crm_upsert")},
		{name: "user-scope-withdraw", envl: setEnvelope("jti-withdraw", oauth("user-scope-withdraw"), payloadWith(`"scopes":["phone_number"]`)),
			want: expectFor("user-scope-withdraw").run("UpdateConsents", "update_consents").run("CRMDeleteFields", "crm_delete_fields")},
		{name: "tokens-revoked", envl: setEnvelope("jti-tokens", oauth("tokens-revoked"), payloadWith("")),
			want: expectFor("tokens-revoked").run("RevokeSessions", "revoke_sessions"), revoked: 2},
		{name: "token-revoked", envl: setEnvelope("jti-token", oauth("token-revoked"), payloadWith(`"token_identifier_alg":"hash_SHA256","token":"abc"`)),
			want: expectFor("token-revoked").run("RevokeSessions", "revoke_sessions"), revoked: 2},
		{name: "account-disabled hijacking", envl: setEnvelope("jti-disabled-h", risc("account-disabled"), payloadWith(`"reason":"hijacking"`)),
			want: expectFor("account-disabled").run("RevokeSessions", "revoke_sessions").run("LockAccount", "lock_account").
				run("SendNotice", "send_notice"),
			params: map[string]map[string]string{"SendNotice": {"notice": "account-hijacked"}}, revoked: 2},
		{name: "account-disabled bulk-account", envl: setEnvelope("jti-disabled-b", risc("account-disabled"), payloadWith(`"reason":"bulk-account"`)),
			want: expectFor("account-disabled").run("RevokeSessions", "revoke_sessions").run("LockAccount", "lock_account").
				audit("send_notice", "skipped"), revoked: 2},
		{name: "account-disabled without reason", envl: setEnvelope("jti-disabled", risc("account-disabled"), payloadWith("")),
			want: expectFor("account-disabled").run("RevokeSessions", "revoke_sessions").run("LockAccount", "lock_account").
				audit("send_notice", "skipped"), revoked: 2},
		{name: "account-enabled", envl: setEnvelope("jti-enabled", risc("account-enabled"), payloadWith("")),
			want: expectFor("account-enabled").run("UnlockAccount", "unlock_account")},
		{name: "account-purged", envl: setEnvelope("jti-purged", risc("account-purged"), payloadWith("")),
			want: expectFor("account-purged").run("RevokeSessions", "revoke_sessions").run("PurgeData", "purge_data").
				run("CRMDelete", "crm_delete"), revoked: 2},
		{name: "account-credential-change-required", envl: setEnvelope("jti-ccr", risc("account-credential-change-required"), payloadWith("")),
			want: expectFor("account-credential-change-required").run("RequireReauth", "require_reauth")},
		{name: "assurance-level-change", envl: setEnvelope("jti-alc", caep("assurance-level-change"), payloadWith(`"namespace":"NIST-AAL","current_level":"nist-aal1"`)),
			want: expectFor("assurance-level-change").run("RequireReauth", "require_reauth")},
		{name: "credential-compromise", envl: setEnvelope("jti-cc", risc("credential-compromise"), payloadWith(`"credential_type":"password"`)),
			want: expectFor("credential-compromise").run("RevokeSessions", "revoke_sessions").run("RequireReauth", "require_reauth").
				run("SendNotice", "send_notice"),
			params: map[string]map[string]string{"SendNotice": {"notice": "credential-compromise"}}, revoked: 2},
		{name: "identifier-changed", envl: setEnvelope("jti-idc", risc("identifier-changed"), payloadWith(`"new-value":"new@example.com"`)),
			want: expectFor("identifier-changed").run("UpdateIdentifier", "update_identifier").run("CRMUpsert", "crm_upsert")},
		{name: "identifier-recycled", envl: setEnvelope("jti-idr", risc("identifier-recycled"), payloadWith("")),
			want: expectFor("identifier-recycled").run("UpdateIdentifier", "update_identifier").run("CRMUpsert", "crm_upsert")},
		{name: "session-revoked", envl: setEnvelope("jti-sr", caep("session-revoked"), payloadWith("")),
			want: expectFor("session-revoked").run("RevokeSessions", "revoke_sessions"), revoked: 2},
		{name: "sessions-revoked", envl: setEnvelope("jti-ssr", risc("sessions-revoked"), payloadWith("")),
			want: expectFor("sessions-revoked").run("RevokeSessions", "revoke_sessions"), revoked: 2},
		{name: "credential-change", envl: setEnvelope("jti-chg", caep("credential-change"), payloadWith(`"credential_type":"password","change_type":"update"`)),
			want:   expectFor("credential-change").run("RevokeSessions", "revoke_sessions").run("SendNotice", "send_notice"),
			params: map[string]map[string]string{"SendNotice": {"notice": "password-changed"}}, revoked: 2},
		{name: "user-profile-changed", envl: setEnvelope("jti-upc", secevent.PrefixKakao+"user-profile-changed", payloadWith(`"changed":["nickname"]`)),
			want: expectFor("user-profile-changed").run("RefreshProfile", "refresh_profile").run("CRMUpsert", "crm_upsert")},
		{name: "talk channel added", envl: talkChannelEnvelope("talk-channel:r1", "added"),
			want: expectFor("channel-added").run("RecordChannel", "record_channel").run("CRMMarketing", "crm_marketing")},
		{name: "talk channel blocked", envl: talkChannelEnvelope("talk-channel:r2", "blocked"),
			want: expectFor("channel-blocked").run("RecordChannel", "record_channel").run("CRMMarketing", "crm_marketing")},
		{name: "talk-share", envl: talkShareEnvelope("talk-share:r3"),
			want: expectFor("talk-share").run("RecordTalkShare", "record_talk_share").run("RunTalkShareHook", "talk_share_hook")},
		{name: "verification", envl: setEnvelope("jti-verify", secevent.PrefixSSF+"verification", `{"state":"abc"}`),
			want: expectFor("verification")},
		{name: "stream-updated", envl: setEnvelope("jti-stream", secevent.PrefixSSF+"stream-updated", `{"status":"enabled"}`),
			want: expectFor("stream-updated")},
		{name: "unknown type", envl: setEnvelope("jti-unknown", "https://example.com/event-type/something-new", `{"x":1}`),
			want: expectFor("something-new")},
	}
}

// TestReactionDefaultPolicy runs every event type of product.md's reaction
// table through the default policy.
func TestReactionDefaultPolicy(t *testing.T) {
	for _, tc := range defaultPolicyCases() {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, harnessOptions{purgeAfter: 720 * time.Hour})
			res, err := h.runReaction(tc.envl)
			require.NoError(t, err)
			require.Equal(t, tc.want.timeline, h.timeline)

			ev := tc.envl.Events[0]
			assertRuns(t, h, tc.envl, ev, tc.want.runs, h.steps)
			for _, c := range h.steps {
				require.Equal(t, tc.params[c.Activity], c.In.Params, "%s params", c.Activity)
			}

			// Every audit row names the event and the user (by keyed hash only).
			wantHash := testHasher.Hash(tc.envl.Subject.Issuer, tc.envl.Subject.UserID)
			for _, r := range h.audits {
				require.Equal(t, tc.envl.Key, r.EventKey)
				require.Equal(t, ev.Type, r.EventType)
				require.Equal(t, wantHash, r.SubjectHash)
				require.NotContains(t, fmt.Sprint(r.Detail), testUserID, "audit detail must not carry the user id")
			}
			received := h.auditFor(ev.Name + "/received")
			require.Equal(t, string(tc.envl.Source), received.Detail["source"])
			// Each planned step writes exactly one row after "received".
			steps := 0
			for _, item := range tc.want.timeline {
				if strings.HasPrefix(item, "audit ") {
					steps++
				}
			}
			steps--
			require.Equal(t, float64(steps), received.Detail["steps"])
			// A step's own result is what its audit row says.
			for _, run := range tc.want.runs {
				r := h.auditFor(ev.Name + "/" + run[1])
				require.Equal(t, run[0], r.Detail["by"], "audit detail of %s", run[1])
			}

			require.Equal(t, ReactionResult{Events: 1, Steps: steps, SessionsRevoked: tc.revoked}, res)

			if tc.child {
				require.Len(t, h.children, 1)
				c := h.children[0]
				require.Equal(t, "Purge", c.Type)
				require.Equal(t, PurgeWorkflowID(testHash), c.ID)
				require.Equal(t, PurgeInput{EventKey: tc.envl.Key, Event: c.In.Event, SubjectHash: testHash, After: 720 * time.Hour}, c.In)
				require.Equal(t, ev.Name, c.In.Event.Name)
				require.True(t, t0.Equal(c.In.Event.Time))
				require.Equal(t, "720h0m0s", h.auditFor("user-unlinked/schedule_purge").Detail["after"])
				require.Len(t, h.claims, 1)
				require.Equal(t, activities.ClaimInput{Kind: "user-unlinked", EventKey: tc.envl.Key, SubjectHash: testHash,
					Issuer: testIssuer, UserID: testUserID, EventTime: h.claims[0].EventTime, Window: OnceWindow}, h.claims[0])
				require.True(t, t0.Equal(h.claims[0].EventTime))
			} else {
				require.Empty(t, h.children)
				require.Empty(t, h.claims)
			}
			require.Empty(t, h.parks)
		})
	}
}

// Every built-in step names an activity with the step signature, so a policy
// never schedules an activity no worker registered.
func TestEveryBuiltInStepHasAnActivity(t *testing.T) {
	typ := reflect.TypeOf(&activities.Activities{})
	want := reflect.TypeOf(func(context.Context, activities.StepInput) (activities.StepResult, error) {
		return activities.StepResult{}, nil
	})
	steps := []string{policy.RevokeSessions, policy.KakaoLogout, policy.LockAccount, policy.UnlockAccount, policy.RequireReauth,
		policy.MarkLinked, policy.MarkUnlinked, policy.RefreshProfile, policy.UpdateConsents, policy.UpdateIdentity,
		policy.CRMUpsert, policy.CRMDelete, policy.CRMMarketing, policy.CRMDeleteFields, policy.SendNotice,
		policy.PurgeData, policy.RecordChannel, policy.RecordTalkShare, policy.TalkShareHook}
	for _, st := range steps {
		m, ok := typ.MethodByName(ActivityForStep(st))
		require.True(t, ok, "step %s: no activity %s", st, ActivityForStep(st))
		got := reflect.FuncOf([]reflect.Type{m.Type.In(1), m.Type.In(2)}, []reflect.Type{m.Type.Out(0), m.Type.Out(1)}, false)
		require.Equal(t, want, got, "step %s signature", st)
	}
	require.Equal(t, "my_custom_step", ActivityForStep("my_custom_step"), "an extension step runs the activity of its name")
	// The harness mocks every activity a built-in step can run.
	var mapped []string
	for _, name := range stepActivities {
		mapped = append(mapped, name)
	}
	require.ElementsMatch(t, stepActivityNames, mapped)
}

// The hijacking notice runs only when the payload says reason=hijacking.
func TestReactionWhenConditionSkipsNotice(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	_, err := h.runReaction(setEnvelope("jti-1", secevent.EventAccountDisabled, payloadWith(`"reason":"bulk-account"`)))
	require.NoError(t, err)
	require.Equal(t, 0, h.calls["SendNotice"])
	r := h.auditFor("account-disabled/send_notice")
	require.Equal(t, OutcomeSkipped, r.Outcome)
	require.Equal(t, "condition not met", r.Detail["reason"])
	require.Equal(t, []string{"RevokeSessions", "LockAccount"}, activityNames(h.steps))
}

func activityNames(calls []stepCall) []string {
	var out []string
	for _, c := range calls {
		out = append(out, c.Activity)
	}
	return out
}

// Shadow mode audits what would run and runs nothing: no step activity, no
// claim, no purge child.
func TestReactionShadowMode(t *testing.T) {
	p, err := policy.Parse([]byte(`
version: 1
events:
  account-disabled:
    shadow: true
    steps:
      - revoke_sessions
      - lock_account
      - send_notice: {notice: account-hijacked, when: {reason: hijacking}}
  user-unlinked:
    shadow: true
    steps: [revoke_sessions, mark_unlinked, {schedule_purge: {after: 24h}}, crm_upsert]
`))
	require.NoError(t, err)

	t.Run("account-disabled", func(t *testing.T) {
		h := newHarness(t, harnessOptions{policy: p})
		res, err := h.runReaction(setEnvelope("jti-shadow", secevent.EventAccountDisabled, payloadWith(`"reason":"hijacking"`)))
		require.NoError(t, err)
		require.Empty(t, h.steps)
		require.Equal(t, expectFor("account-disabled").audit("revoke_sessions", "shadow").audit("lock_account", "shadow").
			audit("send_notice", "shadow").timeline, h.timeline)
		require.Equal(t, map[string]any{"notice": "account-hijacked"}, h.auditFor("account-disabled/send_notice").Detail["params"])
		require.Equal(t, true, h.auditFor("account-disabled/received").Detail["shadow"])
		require.Equal(t, int64(0), res.SessionsRevoked)
	})
	t.Run("condition still applies in shadow", func(t *testing.T) {
		h := newHarness(t, harnessOptions{policy: p})
		_, err := h.runReaction(setEnvelope("jti-shadow2", secevent.EventAccountDisabled, payloadWith("")))
		require.NoError(t, err)
		require.Empty(t, h.steps)
		require.Equal(t, expectFor("account-disabled").audit("revoke_sessions", "shadow").audit("lock_account", "shadow").
			audit("send_notice", "skipped").timeline, h.timeline)
	})
	t.Run("user-unlinked", func(t *testing.T) {
		h := newHarness(t, harnessOptions{policy: p})
		_, err := h.runReaction(unlinkEnvelope("unlink:shadow"))
		require.NoError(t, err)
		require.Empty(t, h.steps)
		require.Empty(t, h.claims)
		require.Empty(t, h.children)
		require.Equal(t, expectFor("user-unlinked").audit("revoke_sessions", "shadow").audit("mark_unlinked", "shadow").
			audit("schedule_purge", "shadow").audit("crm_upsert", "shadow").timeline, h.timeline)
	})
	t.Run("other types keep the default", func(t *testing.T) {
		h := newHarness(t, harnessOptions{policy: p})
		_, err := h.runReaction(setEnvelope("jti-sr", secevent.EventSessionRevoked, payloadWith("")))
		require.NoError(t, err)
		require.Equal(t, []string{"RevokeSessions"}, activityNames(h.steps))
	})
}

// A policy step that names the same step twice runs both, under distinct labels
// and idempotency keys, and CRM steps run on the CRM task queue.
func TestReactionRepeatedStepGetsDistinctKeys(t *testing.T) {
	p, err := policy.Parse([]byte(`
version: 1
events:
  user-profile-changed:
    steps: [crm_upsert, refresh_profile, crm_upsert]
`))
	require.NoError(t, err)
	h := newHarness(t, harnessOptions{policy: p})
	envl := setEnvelope("jti-rep", secevent.EventUserProfileChanged, payloadWith(""))
	_, err = h.runReaction(envl)
	require.NoError(t, err)
	want := expectFor("user-profile-changed").run("CRMUpsert", "crm_upsert").run("RefreshProfile", "refresh_profile").
		run("CRMUpsert", "crm_upsert#2")
	require.Equal(t, want.timeline, h.timeline)
	assertRuns(t, h, envl, envl.Events[0], want.runs, h.steps)
}

// A step whose retries are exhausted parks the event and waits for an
// operator's retry signal; the retried step keeps its idempotency key.
func TestReactionParkAndRetry(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.stepFuncs["LockAccount"] = func(n int, _ activities.StepInput) (activities.StepResult, error) {
		if n == 1 {
			return activities.StepResult{}, temporal.NewNonRetryableApplicationError("profile store refused", activities.ErrTypePermanent, nil)
		}
		return activities.StepResult{Outcome: activities.OutcomeDone}, nil
	}
	h.signalRetry(2*time.Hour, 1)
	start := h.env.Now()
	envl := setEnvelope("jti-park", secevent.EventAccountDisabled, payloadWith(`"reason":"hijacking"`))
	res, err := h.runReaction(envl)
	require.NoError(t, err)

	require.Equal(t, expectFor("account-disabled").run("RevokeSessions", "revoke_sessions").
		raw("LockAccount", "audit account-disabled/lock_account@1=failed", "ParkEvent", "signal", "UnparkEvent").
		run("LockAccount", "lock_account").run("SendNotice", "send_notice").timeline, h.timeline)

	require.Equal(t, []activities.ParkInput{{
		EventKey: envl.Key, Step: "account-disabled/lock_account", WorkflowID: EventWorkflowID(envl.Key),
		Reason: h.parks[0].Reason,
	}}, h.parks)
	require.Contains(t, h.parks[0].Reason, "profile store refused")
	require.Contains(t, h.auditFor("account-disabled/lock_account@1").Detail["error"], "profile store refused")
	require.Equal(t, []string{envl.Key}, h.unparks)

	// A non-retryable error parks at once (one attempt), and the re-run waited
	// for the signal.
	require.Equal(t, int32(1), h.steps[1].Attempt)
	require.Equal(t, h.steps[1].In.IdempotencyKey, h.steps[2].In.IdempotencyKey)
	require.Equal(t, StepKey(envl.Key, "account-disabled", "lock_account"), h.steps[2].In.IdempotencyKey)
	require.GreaterOrEqual(t, h.steps[2].At.Sub(start), 2*time.Hour)
	require.Equal(t, 3, res.Steps)
}

// A retryable failure is retried by Temporal on a bounded schedule (10
// attempts) before the step parks.
func TestReactionRetryableFailureParksAfterRetries(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.stepFuncs["RevokeSessions"] = func(n int, _ activities.StepInput) (activities.StepResult, error) {
		if n <= 10 {
			return activities.StepResult{}, temporal.NewApplicationError("sessions store down", activities.ErrTypeUnavailable)
		}
		return activities.StepResult{Outcome: activities.OutcomeDone, Detail: map[string]any{"revoked": 3.0}}, nil
	}
	h.signalRetry(24*time.Hour, 1)
	res, err := h.runReaction(setEnvelope("jti-retry", secevent.EventSessionRevoked, payloadWith("")))
	require.NoError(t, err)
	require.Equal(t, 11, h.calls["RevokeSessions"])
	for i := 0; i < 10; i++ {
		require.Equal(t, int32(i+1), h.steps[i].Attempt)
	}
	require.Len(t, h.parks, 1)
	require.Equal(t, OutcomeFailed, h.auditFor("session-revoked/revoke_sessions@1").Outcome)
	require.Equal(t, activities.OutcomeDone, h.auditFor("session-revoked/revoke_sessions").Outcome)
	require.Equal(t, int64(3), res.SessionsRevoked)
}

// Several retry signals sent together are one retry: when the re-run fails
// again, the event parks again and waits for a new signal.
func TestReactionDuplicateRetrySignalsCountAsOne(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.stepFuncs["RevokeSessions"] = func(n int, _ activities.StepInput) (activities.StepResult, error) {
		if n <= 2 {
			return activities.StepResult{}, temporal.NewNonRetryableApplicationError(fmt.Sprintf("refused %d", n), activities.ErrTypePermanent, nil)
		}
		return activities.StepResult{Outcome: activities.OutcomeDone}, nil
	}
	h.signalRetry(time.Hour, 3)
	h.signalRetry(5*time.Hour, 1)
	start := h.env.Now()
	envl := setEnvelope("jti-dup", secevent.EventSessionRevoked, payloadWith(""))
	_, err := h.runReaction(envl)
	require.NoError(t, err)
	require.Equal(t, expectFor("session-revoked").raw(
		"RevokeSessions", "audit session-revoked/revoke_sessions@1=failed", "ParkEvent",
		"signal", "signal", "signal", "UnparkEvent",
		"RevokeSessions", "audit session-revoked/revoke_sessions@2=failed", "ParkEvent",
		"signal", "UnparkEvent").run("RevokeSessions", "revoke_sessions").timeline, h.timeline)
	require.Len(t, h.parks, 2)
	require.Equal(t, []string{envl.Key, envl.Key}, h.unparks)
	require.GreaterOrEqual(t, h.steps[2].At.Sub(start), 5*time.Hour, "the third attempt waited for the second retry")
}

// Without an operator's retry the parked workflow gives up after ParkTimeout.
func TestReactionParkTimeout(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.stepFuncs["SendNotice"] = func(int, activities.StepInput) (activities.StepResult, error) {
		return activities.StepResult{}, temporal.NewNonRetryableApplicationError("no template", activities.ErrTypePermanent, nil)
	}
	start := h.env.Now()
	_, err := h.runReaction(setEnvelope("jti-timeout", secevent.EventCredentialChange, payloadWith("")))
	require.Error(t, err)
	require.Contains(t, err.Error(), errParkedTooLong.Error())
	require.Contains(t, err.Error(), "credential-change/send_notice")
	require.GreaterOrEqual(t, h.env.Now().Sub(start), ParkTimeout)
	require.Equal(t, 1, h.calls["SendNotice"])
	require.Len(t, h.parks, 1)
	require.Empty(t, h.unparks)
	require.Equal(t, expectFor("credential-change").run("RevokeSessions", "revoke_sessions").
		raw("SendNotice", "audit credential-change/send_notice@1=failed", "ParkEvent").timeline, h.timeline)
}

// The unlink webhook and the OAUTH user-unlinked SET report the same fact:
// the second one to claim it audits a duplicate and runs nothing.
func TestReactionUnlinkOnceGuard(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.claimResult = false
	res, err := h.runReaction(setEnvelope("jti-unlinked-2", secevent.EventUserUnlinked, payloadWith("")))
	require.NoError(t, err)
	require.Equal(t, expectFor("user-unlinked").raw("ClaimReaction").audit("claim", "duplicate").timeline, h.timeline)
	require.Empty(t, h.steps)
	require.Empty(t, h.children)
	require.Equal(t, int64(0), res.SessionsRevoked)
}

// A reaction for a user whose purge is already pending keeps the earlier timer.
func TestReactionSchedulePurgeWhenOneIsPending(t *testing.T) {
	// Two unlink events in one envelope: the second purge start finds the
	// first one running.
	h := newHarness(t, harnessOptions{realPurge: true, purgeAfter: 30 * 24 * time.Hour})
	envl := unlinkEnvelope("unlink:twice")
	second := envl.Events[0]
	second.Time = t0.Add(time.Minute)
	envl.Events = append(envl.Events, second)
	_, err := h.runReaction(envl)
	require.NoError(t, err)
	var outcomes []string
	for _, r := range h.audits {
		if r.Step == "user-unlinked/schedule_purge" || r.Step == "user-unlinked/schedule_purge#2" {
			outcomes = append(outcomes, r.Outcome+" "+fmt.Sprint(r.Detail["reason"]))
		}
	}
	require.Equal(t, []string{"done <nil>", "skipped a purge is already scheduled for this user"}, outcomes)
}

// cancel_purge cancels the user's pending purge workflow.
func TestReactionCancelPurge(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.cancelErr = nil
	_, err := h.runReaction(setEnvelope("jti-relinked", secevent.EventUserLinked, payloadWith("")))
	require.NoError(t, err)
	require.Equal(t, []string{PurgeWorkflowID(testHash)}, h.cancels)
	require.Equal(t, activities.OutcomeDone, h.auditFor("user-linked/cancel_purge").Outcome)
	require.Equal(t, expectFor("user-linked").run("MarkLinked", "mark_linked").raw("cancel "+PurgeWorkflowID(testHash)).
		audit("cancel_purge", "done").run("CRMUpsert", "crm_upsert").timeline, h.timeline)
}

// A SET with two events: both are planned and each runs its own steps and
// audit rows, keyed by its own name; an event without a subject takes the
// envelope's.
func TestReactionMultiEventEnvelope(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	envl := setEnvelope("jti-multi", secevent.EventAccountDisabled, payloadWith(`"reason":"hijacking"`))
	envl.Events = append(envl.Events, event.Event{
		Type: secevent.EventCredentialCompromise, Name: "credential-compromise", Category: "risc",
		Time: t0.Add(time.Second), Payload: json.RawMessage(`{"credential_type":"password"}`),
	})
	res, err := h.runReaction(envl)
	require.NoError(t, err)

	first := expectFor("account-disabled").run("RevokeSessions", "revoke_sessions").run("LockAccount", "lock_account").
		run("SendNotice", "send_notice")
	second := expectFor("credential-compromise").run("RevokeSessions", "revoke_sessions").
		run("RequireReauth", "require_reauth").run("SendNotice", "send_notice")
	require.Equal(t, append(append([]string{}, first.timeline...), second.timeline...), h.timeline)

	assertRuns(t, h, envl, envl.Events[0], first.runs, h.steps[:3])
	ev2 := envl.Events[1]
	ev2.Subject = envl.Subject
	assertRuns(t, h, envl, ev2, second.runs, h.steps[3:])
	require.NotEqual(t, h.steps[0].In.IdempotencyKey, h.steps[3].In.IdempotencyKey)
	for _, r := range h.audits {
		require.Equal(t, testHash, r.SubjectHash)
	}
	require.Equal(t, secevent.EventCredentialCompromise, h.auditFor("credential-compromise/received").EventType)
	require.Equal(t, ReactionResult{Events: 2, Steps: 6, SessionsRevoked: 4}, res)
}
