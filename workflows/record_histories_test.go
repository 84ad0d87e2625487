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
	"github.com/setflow/setflow/internal/testenv"
	"github.com/setflow/setflow/secevent"
)

// recorder runs the scenarios on a real worker and writes their histories.
type recorder struct {
	t      *testing.T
	c      client.Client
	mu     sync.Mutex
	parked chan string // event keys as ParkEvent sees them
	// failOnce names event keys whose first RevokeSessions fails for good.
	failOnce map[string]bool
}

func (rc *recorder) stepActivity(name string) func(context.Context, activities.StepInput) (activities.StepResult, error) {
	return func(_ context.Context, in activities.StepInput) (activities.StepResult, error) {
		if name == "RevokeSessions" {
			rc.mu.Lock()
			fail := rc.failOnce[in.EventKey]
			delete(rc.failOnce, in.EventKey)
			rc.mu.Unlock()
			if fail {
				return activities.StepResult{}, temporal.NewNonRetryableApplicationError("sessions store refused", activities.ErrTypePermanent, nil)
			}
			return activities.StepResult{Outcome: activities.OutcomeDone, Detail: map[string]any{"revoked": 1}}, nil
		}
		return activities.StepResult{Outcome: activities.OutcomeDone, Detail: map[string]any{"by": name}}, nil
	}
}

func (rc *recorder) register(w worker.Worker) {
	for _, name := range stepActivityNames {
		w.RegisterActivityWithOptions(rc.stepActivity(name), activity.RegisterOptions{Name: name})
	}
	w.RegisterActivityWithOptions(func(context.Context, audit.Record) error { return nil }, activity.RegisterOptions{Name: "RecordAudit"})
	w.RegisterActivityWithOptions(func(context.Context, activities.ClaimInput) (bool, error) { return true, nil },
		activity.RegisterOptions{Name: "ClaimReaction"})
	w.RegisterActivityWithOptions(func(_ context.Context, in activities.ParkInput) error {
		rc.parked <- in.EventKey
		return nil
	}, activity.RegisterOptions{Name: "ParkEvent"})
	w.RegisterActivityWithOptions(func(context.Context, string) error { return nil }, activity.RegisterOptions{Name: "UnparkEvent"})
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
	require.NoError(rc.t, os.WriteFile(filepath.Join(historiesDir, file), append(data, '\n'), 0o644))
	rc.t.Logf("recorded %s (%d events)", file, len(hist.Events))
}

func (rc *recorder) runReaction(ctx context.Context, envl event.Envelope) client.WorkflowRun {
	rc.t.Helper()
	run, err := rc.c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: EventWorkflowID(envl.Key), TaskQueue: TaskQueue}, Reaction, envl)
	require.NoError(rc.t, err)
	return run
}

// TestRecordHistories records the replayed histories (see the top of this file).
func TestRecordHistories(t *testing.T) {
	srv := testenv.Temporal(t, "")
	c := srv.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rc := &recorder{t: t, c: c, parked: make(chan string, 10), failOnce: map[string]bool{}}

	// The plan is the real PlanReaction with the default policy; the purge
	// retention is short so that the purge's timer fires during the recording.
	acts := &activities.Activities{Backends: activities.Backends{Subjects: testHasher, PurgeAfter: 2 * time.Second}}
	main := worker.New(c, TaskQueue, worker.Options{})
	main.RegisterWorkflow(Reaction)
	main.RegisterWorkflow(Purge)
	main.RegisterActivityWithOptions(acts.PlanReaction, activity.RegisterOptions{Name: "PlanReaction"})
	rc.register(main)
	crm := worker.New(c, CRMTaskQueue, worker.Options{})
	rc.register(crm)
	for _, w := range []worker.Worker{main, crm} {
		require.NoError(t, w.Start())
		defer w.Stop()
	}

	// account-disabled for hijacking: revoke, lock, send the notice.
	var res ReactionResult
	require.NoError(t, rc.runReaction(ctx, setEnvelope("rec-disabled", secevent.EventAccountDisabled, payloadWith(`"reason":"hijacking"`))).Get(ctx, &res))
	require.Equal(t, 3, res.Steps)
	rc.save(ctx, EventWorkflowID("rec-disabled"), "reaction-account-disabled-hijacking.json")

	// user-unlinked: claim, steps, the purge child, whose timer then fires.
	require.NoError(t, rc.runReaction(ctx, unlinkEnvelope("unlink:rec")).Get(ctx, &res))
	rc.save(ctx, EventWorkflowID("unlink:rec"), "reaction-user-unlinked.json")
	var pres PurgeResult
	require.NoError(t, c.GetWorkflow(ctx, PurgeWorkflowID(testHash), "").Get(ctx, &pres))
	require.Equal(t, "purged", pres.Outcome)
	rc.save(ctx, PurgeWorkflowID(testHash), "purge-after-timer.json")

	// A step that fails for good parks; the operator's retry re-runs it.
	rc.failOnce["rec-parked"] = true
	run := rc.runReaction(ctx, setEnvelope("rec-parked", secevent.EventAccountDisabled, payloadWith(`"reason":"hijacking"`)))
	select {
	case key := <-rc.parked:
		require.Equal(t, "rec-parked", key)
	case <-ctx.Done():
		t.Fatal("the reaction did not park")
	}
	require.NoError(t, c.SignalWorkflow(ctx, run.GetID(), "", SignalRetry, nil))
	require.NoError(t, run.Get(ctx, &res))
	rc.save(ctx, run.GetID(), "reaction-parked-then-retried.json")

	// user-linked for a user without a pending purge: cancel_purge skipped.
	other := setEnvelope("rec-linked-1", secevent.EventUserLinked, payloadWith(""))
	other.Subject.UserID = "1111"
	other.Events[0].Subject.UserID = "1111"
	require.NoError(t, rc.runReaction(ctx, other).Get(ctx, &res))
	rc.save(ctx, EventWorkflowID(other.Key), "reaction-user-linked-no-pending-purge.json")

	// user-linked while the user's purge waits: the purge is cancelled.
	prun, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: PurgeWorkflowID(testHash), TaskQueue: TaskQueue}, Purge,
		PurgeInput{EventKey: "unlink:rec-2", Event: unlinkEnvelope("unlink:rec-2").Events[0], SubjectHash: testHash, After: time.Hour})
	require.NoError(t, err)
	waitForTimer(ctx, t, c, prun.GetID())
	require.NoError(t, rc.runReaction(ctx, setEnvelope("rec-linked-2", secevent.EventUserLinked, payloadWith(""))).Get(ctx, &res))
	rc.save(ctx, EventWorkflowID("rec-linked-2"), "reaction-user-linked-cancels-purge.json")
	require.NoError(t, prun.Get(ctx, &pres))
	require.Equal(t, "cancelled", pres.Outcome)
	rc.save(ctx, prun.GetID(), "purge-cancelled.json")
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
