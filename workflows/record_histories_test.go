//go:build record

// Records the histories that replay_test.go replays; built only with the
// "record" tag so that it is never part of a normal test run:
//
//	go test -tags record -count=1 -run TestRecordHistories ./workflows/

package workflows

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/api/temporalproto"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"

	"github.com/setflow/setflow/activities"
	"github.com/setflow/setflow/audit"
	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/guard"
	"github.com/setflow/setflow/internal/testenv"
	"github.com/setflow/setflow/policy"
	"github.com/setflow/setflow/reaction"
	"github.com/setflow/setflow/secevent"
	"github.com/setflow/setflow/userstate"
)

// recorder runs the scenarios on a real worker and writes their histories.
// Its activities are simple stand-ins: the state is the real state machine
// over memory (memState), every side effect succeeds.
type recorder struct {
	t      *testing.T
	c      client.Client
	mu     sync.Mutex
	parked chan string // event keys as ParkEvent sees them
	// failOnce names event keys whose first RevokeSessions fails for good.
	failOnce map[string]bool
	// states are the users' states by subject hash; retention overrides the
	// purge retention of a user.
	states    map[string]*memState
	retention map[string]time.Duration
	synced    map[string]int64
	// held names event keys the guard holds (true) until approved (false).
	held map[string]bool
	// noticed receives the event key of each notice sent (not a renotify);
	// renotified counts the renotify steps.
	noticed    chan string
	renotified int
	// notifyFails counts the transient failures still to give an event
	// key's NotifyService; notified logs its attempts ("fail|sent <key>").
	notifyFails map[string]int
	notified    []string
}

func (rc *recorder) state(hash string) *memState {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	s := rc.states[hash]
	if s == nil {
		s = newMemState()
		rc.states[hash] = s
	}
	return s
}

func (rc *recorder) stepActivity(name string) func(context.Context, reaction.StepInput) (reaction.StepResult, error) {
	return func(_ context.Context, in reaction.StepInput) (reaction.StepResult, error) {
		if name == "RevokeSessions" {
			rc.mu.Lock()
			fail := rc.failOnce[in.EventKey]
			delete(rc.failOnce, in.EventKey)
			rc.mu.Unlock()
			if fail {
				return reaction.StepResult{}, temporal.NewNonRetryableApplicationError("sessions store refused", reaction.ErrTypePermanent, nil)
			}
			return reaction.StepResult{Outcome: reaction.OutcomeDone, Detail: map[string]any{"revoked": 1}}, nil
		}
		if name == policy.ActivityFor(policy.SendNotice) {
			rc.sendNotice(in)
		}
		if name == policy.ActivityFor(policy.NotifyService) {
			rc.mu.Lock()
			defer rc.mu.Unlock()
			if rc.notifyFails[in.EventKey] > 0 {
				rc.notifyFails[in.EventKey]--
				rc.notified = append(rc.notified, "fail "+in.EventKey)
				return reaction.StepResult{}, temporal.NewApplicationError("service answered 503", "Unavailable")
			}
			rc.notified = append(rc.notified, "sent "+in.EventKey)
		}
		return reaction.StepResult{Outcome: reaction.OutcomeDone, Detail: map[string]any{"by": name}}, nil
	}
}

// sendNotice records a notice in the user's state as SendNotice does, so
// that a later address change names it (Renotify); a renotify is counted.
func (rc *recorder) sendNotice(in reaction.StepInput) {
	if in.Params["renotify"] == "true" {
		rc.mu.Lock()
		rc.renotified++
		rc.mu.Unlock()
		return
	}
	s := rc.state(testHasher.Hash(in.Event.Subject.Issuer, in.Event.Subject.UserID))
	s.mu.Lock()
	s.state, _ = userstate.Apply(s.state, userstate.Change{Time: in.Event.Time, EventKey: "notice:" + in.IdempotencyKey,
		Notice: &userstate.NoticeRecord{Key: in.IdempotencyKey, Kind: in.Params["notice"]}})
	s.mu.Unlock()
	select {
	case rc.noticed <- in.EventKey:
	default:
	}
}

func (rc *recorder) applyEvent(_ context.Context, in reaction.ApplyInput) (reaction.ApplyResult, error) {
	rc.mu.Lock()
	after, ok := rc.retention[in.Subject.Hash]
	rc.mu.Unlock()
	if ok {
		steps := append([]policy.Step(nil), in.Steps...)
		for i := range steps {
			if steps[i].Name == policy.SchedulePurge {
				steps[i].Params = map[string]string{"after": after.String()}
			}
		}
		in.Steps = steps
	}
	return rc.state(in.Subject.Hash).apply(in, time.Now().UTC()), nil
}

func (rc *recorder) runPurge(_ context.Context, in reaction.RunPurgeInput) (reaction.RunPurgeResult, error) {
	return rc.state(in.Subject.Hash).runPurge(in, time.Now().UTC()), nil
}

func (rc *recorder) syncCRM(_ context.Context, in reaction.SyncInput) (reaction.StepResult, error) {
	v := rc.state(in.SubjectHash).version()
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if v <= rc.synced[in.SubjectHash] {
		return reaction.StepResult{Outcome: reaction.OutcomeSkipped, Detail: map[string]any{"reason": "already synced", "version": v}}, nil
	}
	rc.synced[in.SubjectHash] = v
	return reaction.StepResult{Outcome: reaction.OutcomeDone, Detail: map[string]any{"version": v, "contact": "upserted"}}, nil
}

func (rc *recorder) register(w worker.Worker) {
	for _, name := range stepActivityNames {
		w.RegisterActivityWithOptions(rc.stepActivity(name), activity.RegisterOptions{Name: name})
	}
	w.RegisterActivityWithOptions(func(context.Context, audit.Record) error { return nil }, activity.RegisterOptions{Name: "RecordAudit"})
	w.RegisterActivityWithOptions(rc.applyEvent, activity.RegisterOptions{Name: "ApplyEvent"})
	w.RegisterActivityWithOptions(rc.runPurge, activity.RegisterOptions{Name: "RunPurge"})
	w.RegisterActivityWithOptions(rc.syncCRM, activity.RegisterOptions{Name: "SyncCRM"})
	w.RegisterActivityWithOptions(func(_ context.Context, in reaction.ParkInput) error {
		rc.parked <- in.EventKey
		return nil
	}, activity.RegisterOptions{Name: "ParkEvent"})
	w.RegisterActivityWithOptions(func(context.Context, string) error { return nil }, activity.RegisterOptions{Name: "UnparkEvent"})
	w.RegisterActivityWithOptions(func(_ context.Context, req guard.Request) (guard.Verdict, error) {
		rc.mu.Lock()
		defer rc.mu.Unlock()
		held, known := rc.held[req.EventKey]
		switch {
		case held:
			return guard.Verdict{Decision: guard.Held, Reason: "recorded storm"}, nil
		case known:
			return guard.Verdict{Decision: guard.Approved, By: "recorder"}, nil
		}
		return guard.Verdict{Decision: guard.Admitted}, nil
	}, activity.RegisterOptions{Name: "AdmitDestructive"})
}

// save writes the history of one workflow run as JSON, as the Temporal CLI
// and UI export it.
func (rc *recorder) save(ctx context.Context, workflowID, file string) {
	rc.t.Helper()
	iter := rc.c.GetWorkflowHistory(ctx, workflowID, "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	hist := &historypb.History{}
	for iter.HasNext() {
		ev, err := iter.Next()
		require.NoError(rc.t, err)
		hist.Events = append(hist.Events, ev)
	}
	data, err := temporalproto.CustomJSONMarshalOptions{Indent: "  "}.Marshal(hist)
	require.NoError(rc.t, err)
	require.NoError(rc.t, os.MkdirAll(historiesDir, 0o755))
	// Histories recorded by earlier versions of the workflows stay: they are
	// what the replay test checks new code against. SETFLOW_RECORD_ALL=1
	// records every scenario again.
	if _, err := os.Stat(filepath.Join(historiesDir, file)); err == nil && os.Getenv("SETFLOW_RECORD_ALL") == "" {
		rc.t.Logf("kept %s (recorded before)", file)
		return
	}
	require.NoError(rc.t, os.WriteFile(filepath.Join(historiesDir, file), append(data, '\n'), 0o644))
	rc.t.Logf("recorded %s (%d events)", file, len(hist.Events))
}

// recIdle is how long a recorded stream waits for more events.
const recIdle = 2 * time.Second

// signal delivers envl to its user's stream with Signal-With-Start, as the
// relay does, and returns the stream's id.
func (rc *recorder) signal(ctx context.Context, envl event.Envelope) string {
	rc.t.Helper()
	hash := testHasher.Hash(envl.Subject.Issuer, envl.Subject.UserID)
	id := UserStreamID(hash)
	_, err := rc.c.SignalWithStartWorkflow(ctx, id, SignalEvent, streamEvent(envl), client.StartWorkflowOptions{
		ID: id, TaskQueue: TaskQueue, WorkflowIDReusePolicy: enumspb.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
	}, UserStream, UserStreamInput{SubjectHash: hash, IdleAfter: recIdle})
	require.NoError(rc.t, err)
	return id
}

// wait waits for the stream to complete (idle).
func (rc *recorder) wait(ctx context.Context, id string) {
	rc.t.Helper()
	require.NoError(rc.t, rc.c.GetWorkflow(ctx, id, "").Get(ctx, nil))
}

// forUser moves envl to another user, happening now (a stream's timers run
// against the real clock).
func forUser(envl event.Envelope, userID string) event.Envelope {
	now := time.Now().UTC().Truncate(time.Microsecond)
	envl.Subject.UserID = userID
	envl.IssuedAt, envl.ReceivedAt = now, now
	events := append([]event.Event(nil), envl.Events...)
	for i := range events {
		events[i].Subject.UserID = userID
		events[i].Time = now
	}
	envl.Events = events
	return envl
}

// TestRecordHistories records the replayed histories (see the top of this file).
func TestRecordHistories(t *testing.T) {
	srv := testenv.Temporal(t, "")
	c := srv.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rc := &recorder{t: t, c: c, parked: make(chan string, 10), failOnce: map[string]bool{},
		states: map[string]*memState{}, retention: map[string]time.Duration{}, synced: map[string]int64{}, held: map[string]bool{},
		noticed: make(chan string, 10), notifyFails: map[string]int{}}

	// The plan is the real PlanReaction with the default policy, but for
	// account-enabled, which also notifies the service (no other scenario
	// uses it).
	pol, err := policy.Parse([]byte("version: 1\nevents:\n  account-enabled:\n    steps: [unlock_account, notify_service]\n"))
	require.NoError(t, err)
	acts := &activities.Activities{Backends: activities.Backends{Subjects: testHasher, PurgeAfter: time.Hour, Policy: pol}}
	main := worker.New(c, TaskQueue, worker.Options{})
	main.RegisterWorkflow(Reaction)
	main.RegisterWorkflow(UserStream)
	main.RegisterActivityWithOptions(acts.PlanReaction, activity.RegisterOptions{Name: "PlanReaction"})
	rc.register(main)
	crm := worker.New(c, CRMTaskQueue, worker.Options{})
	rc.register(crm)
	for _, w := range []worker.Worker{main, crm} {
		require.NoError(t, w.Start())
		defer w.Stop()
	}

	// account-disabled for hijacking: revocation at once, the lock from the
	// decision, the notice, the CRM sync of the lock; then the stream idles.
	id := rc.signal(ctx, forUser(setEnvelope("rec-disabled", secevent.EventAccountDisabled, payloadWith(`"reason":"hijacking"`)), "1001"))
	rc.wait(ctx, id)
	rc.save(ctx, id, "stream-account-disabled-hijacking.json")

	// An unlink schedules a purge (a timer in the stream); a later link
	// cancels it, and the stream idles.
	id = rc.signal(ctx, forUser(unlinkEnvelope("unlink:rec-relink"), "1002"))
	waitForTimer(ctx, t, c, id)
	rc.signal(ctx, forUser(setEnvelope("rec-relinked", secevent.EventUserLinked, payloadWith("")), "1002"))
	rc.wait(ctx, id)
	rc.save(ctx, id, "stream-unlink-then-relink-cancels-purge.json")

	// An unlink whose purge is due after 2 s: the timer fires, the purge
	// runs (state, then sessions), the CRM is synced.
	rc.retention[testHasher.Hash(testIssuer, "1003")] = 2 * time.Second
	id = rc.signal(ctx, forUser(setEnvelope("rec-unlinked", secevent.EventUserUnlinked, payloadWith("")), "1003"))
	rc.wait(ctx, id)
	rc.save(ctx, id, "stream-purge-after-timer.json")

	// A step that fails for good parks; the operator's retry re-runs it.
	rc.failOnce["rec-parked"] = true
	id = rc.signal(ctx, forUser(setEnvelope("rec-parked", secevent.EventAccountDisabled, payloadWith(`"reason":"hijacking"`)), "1004"))
	select {
	case key := <-rc.parked:
		require.Equal(t, "rec-parked", key)
	case <-ctx.Done():
		t.Fatal("the stream did not park")
	}
	waitParked(ctx, t, c, id, "rec-parked")
	require.NoError(t, c.SignalWorkflow(ctx, id, "", SignalRetry, "rec-parked"))
	rc.wait(ctx, id)
	rc.save(ctx, id, "stream-parked-then-retried.json")

	// The blast-radius guard holds an account-disabled event; an operator
	// approves it and it runs (search attributes and details all along).
	rc.held["rec-held"] = true
	id = rc.signal(ctx, forUser(setEnvelope("rec-held", secevent.EventAccountDisabled, payloadWith(`"reason":"hijacking"`)), "1005"))
	waitHeld(ctx, t, c, id, "rec-held")
	rc.mu.Lock()
	rc.held["rec-held"] = false
	rc.mu.Unlock()
	require.NoError(t, c.SignalWorkflow(ctx, id, "", SignalHoldDecision, "rec-held"))
	rc.wait(ctx, id)
	rc.save(ctx, id, "stream-held-then-approved.json")

	// A password change's notice goes out; then an address change that
	// happened a minute before it arrives: the stream runs the notice again
	// for that address (a versioned renotify step).
	for len(rc.noticed) > 0 {
		<-rc.noticed
	}
	id = rc.signal(ctx, forUser(setEnvelope("rec-password", secevent.EventCredentialChange, payloadWith("")), "1006"))
	select {
	case key := <-rc.noticed:
		require.Equal(t, "rec-password", key)
	case <-ctx.Done():
		t.Fatal("the notice was not sent")
	}
	late := forUser(setEnvelope("rec-late-address", secevent.EventIdentifierChanged, payloadWith(`"new-value":"owner@example.com"`)), "1006")
	late.Events[0].Time = late.Events[0].Time.Add(-time.Minute)
	rc.signal(ctx, late)
	rc.wait(ctx, id)
	rc.save(ctx, id, "stream-late-address-renotifies.json")
	rc.mu.Lock()
	require.Equal(t, 1, rc.renotified, "the late address change ran the notice again")
	rc.mu.Unlock()

	// Two events that notify the service: the first document is retried
	// (two transient failures) while the second waits in the user's
	// notify lane (versioned), then goes out.
	rc.notifyFails["rec-notify-1"] = 2
	id = rc.signal(ctx, forUser(setEnvelope("rec-notify-1", secevent.EventAccountEnabled, payloadWith("")), "1007"))
	rc.signal(ctx, forUser(setEnvelope("rec-notify-2", secevent.EventAccountEnabled, payloadWith("")), "1007"))
	rc.wait(ctx, id)
	rc.save(ctx, id, "stream-notify-service-one-at-a-time.json")
	rc.mu.Lock()
	require.Equal(t, []string{"fail rec-notify-1", "fail rec-notify-1", "sent rec-notify-1", "sent rec-notify-2"}, rc.notified)
	rc.mu.Unlock()

	// A Talk Share delivery names no user: a reaction workflow.
	envl := talkShareEnvelope("talk-share:rec")
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: EventWorkflowID(envl.Key), TaskQueue: TaskQueue}, Reaction, envl)
	require.NoError(t, err)
	var res ReactionResult
	require.NoError(t, run.Get(ctx, &res))
	require.Equal(t, ReactionResult{Events: 1, Steps: 2}, res)
	rc.save(ctx, run.GetID(), "reaction-talk-share.json")

	// The stand-ins saw what the scenarios meant.
	require.Nil(t, rc.state(testHasher.Hash(testIssuer, "1002")).state.Purge, "the link cancelled the purge")
	require.NotNil(t, rc.state(testHasher.Hash(testIssuer, "1003")).state.Tombstone, "the purge ran")
}

// waitParked waits until the stream says the event's step waits for a retry
// (a retry sent while ParkEvent still runs is lost: see
// TestUserStreamRetryWhileParkingIsNotLost).
func waitParked(ctx context.Context, t *testing.T, c client.Client, id, key string) {
	t.Helper()
	waitListed(ctx, t, c, id, key, "park the event", func(st StreamStatus) []string { return st.Parked })
}

// waitHeld waits until the stream says the event is held.
func waitHeld(ctx context.Context, t *testing.T, c client.Client, id, key string) {
	t.Helper()
	waitListed(ctx, t, c, id, key, "hold the event", func(st StreamStatus) []string { return st.Held })
}

// waitListed polls the stream's state until list names key.
func waitListed(ctx context.Context, t *testing.T, c client.Client, id, key, what string, list func(StreamStatus) []string) {
	t.Helper()
	for {
		v, err := c.QueryWorkflow(ctx, id, "", QueryState)
		require.NoError(t, err)
		var st StreamStatus
		require.NoError(t, v.Get(&st))
		if slices.Contains(list(st), key) {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatal(errors.New("the stream did not " + what))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitForTimer waits until the workflow's history shows a started timer.
func waitForTimer(ctx context.Context, t *testing.T, c client.Client, id string) {
	t.Helper()
	for {
		iter := c.GetWorkflowHistory(ctx, id, "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
		for iter.HasNext() {
			ev, err := iter.Next()
			require.NoError(t, err)
			if ev.GetEventType() == enumspb.EVENT_TYPE_TIMER_STARTED {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatal(errors.New("the purge timer did not start"))
		case <-time.After(100 * time.Millisecond):
		}
	}
}
