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

// waitForRetry stands in for a parked reaction: it completes once signalled.
func waitForRetry(ctx workflow.Context) error {
	workflow.GetSignalChannel(ctx, workflows.SignalRetry).Receive(ctx, nil)
	return nil
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

	// A parked purge: the inbox row names the workflow that waits.
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "setflow-purge/abc", TaskQueue: "retry-test"}, waitForRetry)
	if err != nil {
		t.Fatal(err)
	}
	db.MustExec(`INSERT INTO setflow_inbox (dedupe_key, source, raw, envelope, status, workflow_id)
		VALUES ('set:1', 'set', '', '{}', 'parked', 'setflow-purge/abc'), ('set:2', 'set', '', '{}', 'parked', NULL),
		       ('set:3', 'set', '', '{}', 'dispatched', NULL)`)
	row := func(key string) inboxRow {
		var r inboxRow
		if err := db.Get(&r, `SELECT dedupe_key, source, status, attempts, last_error, received_at, dispatched_at, workflow_id FROM setflow_inbox WHERE dedupe_key = $1`, key); err != nil {
			t.Fatal(err)
		}
		return r
	}
	if err := retryEvent(ctx, db, c, row("set:1")); err != nil {
		t.Fatalf("retry parked purge: %v", err)
	}
	if err := run.Get(ctx, nil); err != nil {
		t.Fatalf("the parked workflow did not get the retry: %v", err)
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
