package workflows

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/testsuite"

	"github.com/setflow/setflow/activities"
	"github.com/setflow/setflow/audit"
	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/kakaoapi"
	"github.com/setflow/setflow/policy"
	"github.com/setflow/setflow/reaction"
	"github.com/setflow/setflow/secevent"
	"github.com/setflow/setflow/talk"
	"github.com/setflow/setflow/userstate"
)

// The tests run Reaction and UserStream in the SDK's test environment:
// PlanReaction (a pure local activity) runs for real against the policy under
// test, every other activity is a recording mock, and time is skipped, so
// timers of days take no time. ApplyEvent and RunPurge are answered by a small
// in-memory state (memState, the real userstate machine) unless a test sets
// its own answer.

const (
	testIssuer = "https://kauth.kakao.com"
	testUserID = "4242424242"
	// unlinkEventType is ingress.UnlinkEventType (the unlink webhook).
	unlinkEventType = "kakao:unlink-webhook"
	// testPurgeAfter is the harness's retention before a purge.
	testPurgeAfter = 720 * time.Hour
)

var (
	testHasher  = audit.SubjectHasher{Key: []byte("setflow-workflow-tests")}
	testSubject = event.Subject{Issuer: testIssuer, UserID: testUserID, Format: "kakao_user_id"}
	testHash    = testHasher.Hash(testIssuer, testUserID)
	// t0 is when the test events happened and when the test clock starts;
	// nanoseconds make RFC 3339 cut-offs exact (the plan truncates event
	// times to microseconds, as PostgreSQL keeps them).
	t0 = time.Date(2025, 3, 4, 5, 6, 7, 890123000, time.UTC)
)

// stepActivityNames are the activities the built-in steps run (policy's
// steps table).
var stepActivityNames = func() []string {
	var out []string
	for _, d := range policy.Steps() {
		if name := d.Activity(); name != "" {
			out = append(out, name)
		}
	}
	return out
}()

// quietLogger drops the SDK's chatter; the tests assert what ran, not logs.
type quietLogger struct{}

func (quietLogger) Debug(string, ...any) {}
func (quietLogger) Info(string, ...any)  {}
func (quietLogger) Warn(string, ...any)  {}
func (quietLogger) Error(string, ...any) {}

// kakaoStub makes PlanReaction see Kakao's user API as configured (an unlink
// webhook is then confirmed before it may revoke).
type kakaoStub struct{}

func (kakaoStub) Logout(context.Context, string) error { return nil }
func (kakaoStub) Profile(context.Context, string) (*kakaoapi.Profile, error) {
	return nil, kakaoapi.ErrNotLinked
}

// memState is one user's state in memory, changed by the real state machine;
// changeOf derives the change from the steps much as activities.ApplyEvent does.
type memState struct {
	mu      sync.Mutex
	state   userstate.State
	applied map[string]bool
}

func newMemState() *memState { return &memState{applied: map[string]bool{}} }

func (m *memState) apply(in reaction.ApplyInput, now time.Time) reaction.ApplyResult {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.applied[in.EventKey] {
		return reaction.ApplyResult{Repeat: true, Version: m.state.Version, Purge: m.state.Purge}
	}
	m.applied[in.EventKey] = true
	var d userstate.Decision
	m.state, d = userstate.Apply(m.state, activities.ChangeOf(in, now, 0))
	return reaction.ApplyResult{Decision: d, Version: m.state.Version, Purge: m.state.Clone().Purge}
}

func (m *memState) runPurge(in reaction.RunPurgeInput, now time.Time) reaction.RunPurgeResult {
	m.mu.Lock()
	defer m.mu.Unlock()
	var d userstate.Decision
	m.state, d = userstate.RunPurge(m.state, in.Cutoff, now)
	return reaction.RunPurgeResult{Decision: d}
}

func (m *memState) version() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state.Version
}

// stepCall is one attempt of a step activity.
type stepCall struct {
	Activity  string
	In        reaction.StepInput
	TaskQueue string
	Attempt   int32
	At        time.Time
	// RetryFor is the attempt's schedule-to-close: how long its transient
	// failures are retried before the step parks.
	RetryFor time.Duration
}

// applyCall is one attempt of ApplyEvent (At: when it answered).
type applyCall struct {
	In      reaction.ApplyInput
	Attempt int32
	At      time.Time
	Err     error
}

// started is one activity attempt as it started.
type started struct {
	Activity  string
	TaskQueue string
	Attempt   int32
	At        time.Time
	// Version is the in-memory state's version when a SyncCRM started.
	Version int64
}

type purgeCall struct {
	In reaction.RunPurgeInput
	At time.Time
}

type stepFunc func(call int, in reaction.StepInput) (reaction.StepResult, error)

// harness records everything the workflow under test did.
type harness struct {
	t     *testing.T
	env   *testsuite.TestWorkflowEnvironment
	state *memState

	mu         sync.Mutex
	timeline   []string // activity names, "audit <step>=<outcome>", "signal"
	steps      []stepCall
	audits     []audit.Record
	parks      []reaction.ParkInput
	unparks    []string
	applies    []applyCall
	starts     []started
	syncs      []time.Time // SyncCRM attempts as they answered
	syncInputs []reaction.SyncInput
	synced     int64 // the version the last SyncCRM sent
	purges     []purgeCall

	// behaviour of the mocks, set before running
	stepFuncs  map[string]stepFunc
	calls      map[string]int
	applyFunc  func(call int, in reaction.ApplyInput) (reaction.ApplyResult, error)
	applyDelay time.Duration
	syncFunc   func(call int) (reaction.StepResult, error)
	syncDelay  time.Duration
	purgeFunc  func(in reaction.RunPurgeInput) (reaction.RunPurgeResult, error)
	parkDelay  time.Duration
}

type harnessOptions struct {
	policy *policy.Policy
	// kakao configures Kakao's user API (unlink webhooks are confirmed).
	kakao bool
	// extra registers extension step activities of these names.
	extra []string
	// retryFor is the workers' step retry window (Backends.StepRetryFor).
	retryFor time.Duration
}

func newHarness(t *testing.T, opts harnessOptions) *harness {
	t.Helper()
	var suite testsuite.WorkflowTestSuite
	suite.SetLogger(quietLogger{})
	env := suite.NewTestWorkflowEnvironment()
	env.SetStartTime(t0)
	h := &harness{t: t, env: env, state: newMemState(), stepFuncs: map[string]stepFunc{}, calls: map[string]int{}}

	env.RegisterWorkflow(Reaction)
	env.RegisterWorkflow(UserStream)
	b := activities.Backends{Policy: opts.policy, Subjects: testHasher, PurgeAfter: testPurgeAfter, StepRetryFor: opts.retryFor}
	if opts.kakao {
		b.Kakao = kakaoStub{}
	}
	env.RegisterActivity(&activities.Activities{Backends: b})
	for _, name := range opts.extra {
		env.RegisterActivityWithOptions(func(ctx context.Context, in reaction.StepInput) (reaction.StepResult, error) {
			return h.step(ctx, name, in)
		}, activity.RegisterOptions{Name: name})
	}

	for _, name := range stepActivityNames {
		env.OnActivity(name, mock.Anything, mock.Anything).Return(
			func(ctx context.Context, in reaction.StepInput) (reaction.StepResult, error) {
				return h.step(ctx, name, in)
			})
	}
	env.OnActivity("RecordAudit", mock.Anything, mock.Anything).Return(func(_ context.Context, r audit.Record) error {
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
		h.mu.Lock()
		defer h.mu.Unlock()
		h.audits = append(h.audits, r)
		h.timeline = append(h.timeline, "audit "+r.Step+"="+r.Outcome)
		return nil
	})
	env.OnActivity("ParkEvent", mock.Anything, mock.Anything).AfterFn(func() time.Duration { return h.parkDelay }).Return(
		func(_ context.Context, in reaction.ParkInput) error {
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
	env.OnActivity("ApplyEvent", mock.Anything, mock.Anything).AfterFn(func() time.Duration { return h.applyDelay }).Return(
		func(ctx context.Context, in reaction.ApplyInput) (reaction.ApplyResult, error) {
			h.mu.Lock()
			h.calls["ApplyEvent"]++
			n, f := h.calls["ApplyEvent"], h.applyFunc
			h.mu.Unlock()
			var res reaction.ApplyResult
			var err error
			if f != nil {
				res, err = f(n, in)
			} else {
				res = h.state.apply(in, h.now())
			}
			h.mu.Lock()
			defer h.mu.Unlock()
			h.applies = append(h.applies, applyCall{In: in, Attempt: activity.GetInfo(ctx).Attempt, At: h.now(), Err: err})
			h.timeline = append(h.timeline, "ApplyEvent")
			return res, err
		})
	env.OnActivity("SyncCRM", mock.Anything, mock.Anything).AfterFn(func() time.Duration { return h.syncDelay }).Return(
		func(_ context.Context, in reaction.SyncInput) (reaction.StepResult, error) {
			h.mu.Lock()
			h.syncInputs = append(h.syncInputs, in)
			h.calls["SyncCRM"]++
			n, f := h.calls["SyncCRM"], h.syncFunc
			h.syncs = append(h.syncs, h.now())
			h.timeline = append(h.timeline, "SyncCRM")
			h.mu.Unlock()
			if f != nil {
				return f(n)
			}
			return h.sync(), nil
		})
	env.OnActivity("RunPurge", mock.Anything, mock.Anything).Return(
		func(_ context.Context, in reaction.RunPurgeInput) (reaction.RunPurgeResult, error) {
			h.mu.Lock()
			h.purges = append(h.purges, purgeCall{In: in, At: h.now()})
			h.timeline = append(h.timeline, "RunPurge")
			f := h.purgeFunc
			h.mu.Unlock()
			if f != nil {
				return f(in)
			}
			return h.state.runPurge(in, h.now()), nil
		})
	env.SetOnActivityStartedListener(func(info *activity.Info, _ context.Context, _ converter.EncodedValues) {
		s := started{Activity: info.ActivityType.Name, TaskQueue: info.TaskQueue, Attempt: info.Attempt, At: env.Now().UTC()}
		if s.Activity == "SyncCRM" {
			s.Version = h.state.version()
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		h.starts = append(h.starts, s)
	})
	return h
}

// now is the test clock, in UTC as the workflow's times are.
func (h *harness) now() time.Time { return h.env.Now().UTC() }

// sync is SyncCRM's default: like the real one, it sends the state as it was
// when the attempt started, once per version.
func (h *harness) sync() reaction.StepResult {
	h.mu.Lock()
	defer h.mu.Unlock()
	var v int64
	for _, s := range h.starts {
		if s.Activity == "SyncCRM" {
			v = s.Version
		}
	}
	if v <= h.synced {
		return reaction.StepResult{Outcome: reaction.OutcomeSkipped, Detail: map[string]any{"reason": "already synced", "version": v}}
	}
	h.synced = v
	return reaction.StepResult{Outcome: reaction.OutcomeDone, Detail: map[string]any{"version": v, "contact": "upserted"}}
}

// step is every step activity's mock: it records the call, then answers with
// the function set for the activity, else "done" with a detail naming it.
func (h *harness) step(ctx context.Context, name string, in reaction.StepInput) (reaction.StepResult, error) {
	info := activity.GetInfo(ctx)
	h.mu.Lock()
	h.calls[name]++
	n := h.calls[name]
	h.steps = append(h.steps, stepCall{Activity: name, In: in, TaskQueue: info.TaskQueue, Attempt: info.Attempt, At: h.now(),
		RetryFor: info.ScheduleToCloseTimeout})
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
	return reaction.StepResult{Outcome: reaction.OutcomeDone, Detail: detail}, nil
}

// signalRetry sends the retry signal (with payload) after d, times times.
func (h *harness) signalRetry(d time.Duration, times int, payload any) {
	h.env.RegisterDelayedCallback(func() {
		for i := 0; i < times; i++ {
			h.mu.Lock()
			h.timeline = append(h.timeline, "signal")
			h.mu.Unlock()
			h.env.SignalWorkflow(SignalRetry, payload)
		}
	}, d)
}

// send signals envelopes to the user's stream after d, in order, each naming
// all its events.
func (h *harness) send(d time.Duration, envls ...event.Envelope) {
	h.env.RegisterDelayedCallback(func() {
		for _, e := range envls {
			h.env.SignalWorkflow(SignalEvent, streamEvent(e))
		}
	}, d)
}

func streamEvent(e event.Envelope) StreamEvent {
	se := StreamEvent{Envelope: e}
	for i := range e.Events {
		se.Events = append(se.Events, i)
	}
	return se
}

// runReaction runs the Reaction workflow for envl to its end.
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

// runStream runs the user's stream until it completes (idle) and returns its
// error (a *workflow.ContinueAsNewError when it continued as new).
func (h *harness) runStream(in UserStreamInput) error {
	h.t.Helper()
	if in.SubjectHash == "" {
		in.SubjectHash = testHash
	}
	h.env.SetStartWorkflowOptions(client.StartWorkflowOptions{ID: UserStreamID(in.SubjectHash), TaskQueue: TaskQueue})
	h.env.ExecuteWorkflow(UserStream, in)
	require.True(h.t, h.env.IsWorkflowCompleted(), "workflow did not complete")
	return h.env.GetWorkflowError()
}

// query asks the running stream for its status after d.
func (h *harness) queryAt(d time.Duration, out *StreamStatus) {
	h.env.RegisterDelayedCallback(func() {
		v, err := h.env.QueryWorkflow(QueryState)
		require.NoError(h.t, err)
		require.NoError(h.t, v.Get(out))
	}, d)
}

func (h *harness) auditFor(step string) audit.Record {
	h.t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range h.audits {
		if r.Step == step {
			return r
		}
	}
	h.t.Fatalf("no audit record for %s in %v", step, h.timeline)
	return audit.Record{}
}

// auditsOf lists "<step>=<outcome>" of an event key's audit rows, in order.
func (h *harness) auditsOf(eventKey string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, r := range h.audits {
		if r.EventKey == eventKey {
			out = append(out, r.Step+"="+r.Outcome)
		}
	}
	return out
}

// outcomes maps an event key's audit steps to their outcomes; a step written
// twice fails the test (audit rows are write-once per event key and step).
func (h *harness) outcomes(eventKey string) map[string]string {
	h.t.Helper()
	out := map[string]string{}
	for _, a := range h.auditsOf(eventKey) {
		step, outcome, _ := strings.Cut(a, "=")
		_, dup := out[step]
		require.False(h.t, dup, "audit row %s written twice for %s", step, eventKey)
		out[step] = outcome
	}
	return out
}

// requireCompleted checks that the event's last audit row is
// "<name>/completed".
func (h *harness) requireCompleted(eventKey, name string) {
	h.t.Helper()
	rows := h.auditsOf(eventKey)
	require.NotEmpty(h.t, rows, "no audit rows for %s", eventKey)
	require.Equal(h.t, name+"/"+StepCompleted+"="+reaction.OutcomeDone, rows[len(rows)-1], "last audit row of %s: %v", eventKey, rows)
}

func (h *harness) stepsOf(activityName string) []stepCall {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []stepCall
	for _, c := range h.steps {
		if c.Activity == activityName {
			out = append(out, c)
		}
	}
	return out
}

func (h *harness) startsOf(activityName string) []started {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []started
	for _, s := range h.starts {
		if s.Activity == activityName {
			out = append(out, s)
		}
	}
	return out
}

// setEnvelope is a one-event SET delivery at t0, as the ingress stores it.
func setEnvelope(key, eventType, payload string) event.Envelope {
	return setEnvelopeAt(key, eventType, payload, t0)
}

// setEnvelopeAt is a SET issued at at, received a second later, about an
// event at at.
func setEnvelopeAt(key, eventType, payload string, at time.Time) event.Envelope {
	cat := strings.ToLower(string(secevent.CategoryOf(eventType)))
	return event.Envelope{
		Key: key, Source: event.SourceSET, Subject: testSubject, IssuedAt: at, ReceivedAt: at.Add(time.Second), TxnID: "txn-1",
		Events: []event.Event{{
			Type: eventType, Name: secevent.EventName(eventType), Category: cat,
			Subject: testSubject, Time: at, Payload: json.RawMessage(payload),
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

func unlinkEnvelope(key string) event.Envelope { return unlinkEnvelopeAt(key, t0) }

// unlinkEnvelopeAt is an unlink webhook received at at (its event time).
func unlinkEnvelopeAt(key string, at time.Time) event.Envelope {
	return event.Envelope{
		Key: key, Source: event.SourceUnlink, Subject: testSubject, IssuedAt: at, ReceivedAt: at,
		Events: []event.Event{{
			Type: unlinkEventType, Name: "user-unlinked", Category: "kakao-webhook", Subject: testSubject, Time: at,
			Payload: json.RawMessage(`{"app_id":"1234","referrer_type":"UNLINK_FROM_APPS"}`),
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

// ssfEnvelope is a SET about the stream itself (verification, stream
// updates): it names no user.
func ssfEnvelope(key, name, payload string) event.Envelope {
	envl := setEnvelope(key, secevent.PrefixSSF+name, payload)
	envl.Subject = event.Subject{}
	envl.Events[0].Subject = event.Subject{}
	return envl
}
