package main

import (
	"context"
	"testing"
	"time"

	"go.temporal.io/sdk/client"
	sdkworker "go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

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

func TestEventsRetrySignalsTheParkedWorkflowOrRequeues(t *testing.T) {
	db, _ := testenv.Database(t)
	srv := testenv.Temporal(t, "")
	c := srv.Client()
	w := sdkworker.New(c, "retry-test", sdkworker.Options{})
	w.RegisterWorkflow(waitForRetry)
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// A step parked in a user's stream: the inbox row names the stream.
	streamID := workflows.UserStreamID("abc")
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: streamID, TaskQueue: "retry-test"}, waitForRetry)
	if err != nil {
		t.Fatal(err)
	}
	db.MustExec(`INSERT INTO setflow_inbox (dedupe_key, source, raw, envelope, status, workflow_id)
		VALUES ('set:1', 'set', '', '{}', 'parked', $1), ('set:2', 'set', '', '{}', 'parked', NULL),
		       ('set:3', 'set', '', '{}', 'dispatched', NULL)`, streamID)
	row := func(key string) inboxRow {
		var r inboxRow
		if err := db.Get(&r, `SELECT dedupe_key, source, status, attempts, last_error, received_at, dispatched_at, workflow_id FROM setflow_inbox WHERE dedupe_key = $1`, key); err != nil {
			t.Fatal(err)
		}
		return r
	}
	if err := retryEvent(ctx, db, c, row("set:1")); err != nil {
		t.Fatalf("retry parked step: %v", err)
	}
	// A stream runs the steps of many events: the signal names the one to retry.
	var key string
	if err := run.Get(ctx, &key); err != nil || key != "set:1" {
		t.Fatalf("the parked stream got a retry for %q (%v), want set:1", key, err)
	}
	// No running workflow (its run gave up): the event goes back to the relay.
	if err := retryEvent(ctx, db, c, row("set:2")); err != nil {
		t.Fatalf("retry failed run: %v", err)
	}
	if st := row("set:2").Status; st != "pending" {
		t.Fatalf("status %s, want pending", st)
	}
	// Nothing parked and nothing running: a clear refusal, no change.
	if err := retryEvent(ctx, db, c, row("set:3")); err == nil {
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
	w := sdkworker.New(c, "retry-sync-test", sdkworker.Options{})
	w.RegisterWorkflow(waitForRetry)
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
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
