package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/client"
	sdkworker "go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/setflow/setflow/inbox"
	"github.com/setflow/setflow/internal/testenv"
	"github.com/setflow/setflow/workflows"
)

// waitForRetry stands in for a parked step of a user's stream: it completes
// once signalled, with the event key the signal names.
func waitForRetry(ctx workflow.Context) (string, error) {
	var key string
	workflow.GetSignalChannel(ctx, workflows.SignalRetry).Receive(ctx, &key)
	return key, nil
}

// startWaiters runs waitForRetry workflows on queue until the test ends and
// returns the test's deadline context.
func startWaiters(t *testing.T, c client.Client, queue string) context.Context {
	t.Helper()
	w := sdkworker.New(c, queue, sdkworker.Options{})
	w.RegisterWorkflow(waitForRetry)
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestEventsRetrySignalsTheParkedWorkflowOrRequeues(t *testing.T) {
	db, _ := testenv.Database(t)
	srv := testenv.Temporal(t, "")
	c := srv.Client()
	ctx := startWaiters(t, c, "retry-test")

	// A step parked in a user's stream: the inbox row names the stream.
	streamID := workflows.UserStreamID("abc")
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: streamID, TaskQueue: "retry-test"}, waitForRetry)
	if err != nil {
		t.Fatal(err)
	}
	db.MustExec(`INSERT INTO setflow_inbox (dedupe_key, source, raw, envelope, status, workflow_id)
		VALUES ('set:1', 'set', '', '{}', 'parked', $1), ('set:2', 'set', '', '{}', 'parked', NULL),
		       ('set:3', 'set', '', '{}', 'dispatched', NULL)`, streamID)
	store := inbox.NewPostgres(db)
	row := func(key string) inbox.Entry {
		e, err := store.Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	if err := retryEvent(ctx, store, c, row("set:1")); err != nil {
		t.Fatalf("retry parked step: %v", err)
	}
	// A stream runs the steps of many events: the signal names the one to retry.
	var key string
	if err := run.Get(ctx, &key); err != nil || key != "set:1" {
		t.Fatalf("the parked stream got a retry for %q (%v), want set:1", key, err)
	}
	// No running workflow (its run gave up): the event goes back to the relay.
	if err := retryEvent(ctx, store, c, row("set:2")); err != nil {
		t.Fatalf("retry failed run: %v", err)
	}
	if st := row("set:2").Status; st != "pending" {
		t.Fatalf("status %s, want pending", st)
	}
	// Nothing parked and nothing running: a clear refusal, no change.
	if err := retryEvent(ctx, store, c, row("set:3")); err == nil {
		t.Fatal("retry of a dispatched event with no running workflow was accepted")
	}
	if st := row("set:3").Status; st != "dispatched" {
		t.Fatalf("status changed to %s", st)
	}
}

// A parked CRM sync has no inbox row: the retry goes to the user's stream,
// naming the sync's key.
func TestEventsRetryOfACRMSyncSignalsTheStream(t *testing.T) {
	srv := testenv.Temporal(t, "")
	c := srv.Client()
	ctx := startWaiters(t, c, "retry-sync-test")
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: workflows.UserStreamID("h1"), TaskQueue: "retry-sync-test"}, waitForRetry)
	if err != nil {
		t.Fatal(err)
	}
	if err := retryCRMSync(ctx, c, workflows.CRMSyncKeyPrefix+"h1"); err != nil {
		t.Fatal(err)
	}
	var key string
	if err := run.Get(ctx, &key); err != nil || key != "crm-sync/h1" {
		t.Fatalf("stream got %q (%v), want crm-sync/h1", key, err)
	}
	if err := retryCRMSync(ctx, c, workflows.CRMSyncKeyPrefix+"nobody"); err == nil {
		t.Fatal("retry of a sync whose stream does not run succeeded")
	}
}

// `setflow events retry -all-parked` re-drives every parked event the filter
// selects — by step, by age — and a dry run only lists them.
func TestEventsRetryAllParked(t *testing.T) {
	db, _ := testenv.Database(t)
	srv := testenv.Temporal(t, "")
	c := srv.Client()
	ctx := startWaiters(t, c, "retry-bulk-test")
	runs := map[string]client.WorkflowRun{}
	for _, h := range []string{"u1", "u2"} {
		run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: workflows.UserStreamID(h), TaskQueue: "retry-bulk-test"}, waitForRetry)
		if err != nil {
			t.Fatal(err)
		}
		runs[h] = run
	}
	db.MustExec(`INSERT INTO setflow_inbox (dedupe_key, source, raw, envelope, status, workflow_id, last_error, received_at) VALUES
		('set:a', 'set', '', '{}', 'parked', $1, 'account-disabled/send_notice: smtp down', now()),
		('set:b', 'set', '', '{}', 'parked', $2, 'user-linked/apply: bad payload', now()),
		('set:c', 'set', '', '{}', 'parked', NULL, 'account-disabled/send_notice: smtp down', now() - interval '2 days'),
		('set:d', 'set', '', '{}', 'dispatched', NULL, NULL, now())`, workflows.UserStreamID("u1"), workflows.UserStreamID("u2"))
	status := func(key string) string {
		var s string
		if err := db.Get(&s, `SELECT status FROM setflow_inbox WHERE dedupe_key = $1`, key); err != nil {
			t.Fatal(err)
		}
		return s
	}
	var out strings.Builder
	n, err := retryParked(ctx, inbox.NewPostgres(db), nil, parkedFilter{all: true, step: "send_notice", dryRun: true}, &out)
	if err != nil || n != 2 || !strings.Contains(out.String(), "would retry set:a") || !strings.Contains(out.String(), "would retry set:c") ||
		strings.Contains(out.String(), "set:b") {
		t.Fatalf("dry run by step: %d %v\n%s", n, err, out.String())
	}
	if status("set:c") != "parked" {
		t.Fatal("a dry run changed something")
	}
	// The recent ones, whatever their step: the running streams are signalled
	// with the parked event's key.
	out.Reset()
	if n, err := retryParked(ctx, inbox.NewPostgres(db), c, parkedFilter{all: true, since: time.Hour}, &out); err != nil || n != 2 {
		t.Fatalf("retry of recent parked events: %d %v\n%s", n, err, out.String())
	}
	for h, want := range map[string]string{"u1": "set:a", "u2": "set:b"} {
		var key string
		if err := runs[h].Get(ctx, &key); err != nil || key != want {
			t.Fatalf("stream %s got a retry for %q (%v), want %s", h, key, err, want)
		}
	}
	// The old one's workflow is gone: it goes back to the relay.
	if n, err := retryParked(ctx, inbox.NewPostgres(db), c, parkedFilter{all: true, step: "account-disabled/send_notice", since: 72 * time.Hour}, &out); err != nil || n != 2 {
		t.Fatalf("retry by full step name: %d %v", n, err)
	}
	if status("set:c") != "pending" {
		t.Fatalf("set:c is %s, want pending (re-queued)", status("set:c"))
	}
}
