package activities

import (
	"context"
	"testing"

	"github.com/setflow/setflow/internal/testenv"
	"github.com/setflow/setflow/reaction"
)

// A step that parks after its inbox entry is gone stays listed and
// retryable: a placeholder row names the parked workflow.
func TestParkEventWithoutAnInboxEntry(t *testing.T) {
	db, _ := testenv.Database(t)
	a := &Activities{Backends: Backends{DB: db}}
	ctx := context.Background()
	if err := a.ParkEvent(ctx, reaction.ParkInput{EventKey: "unlink:old", Step: "purge/run", Reason: "broken", WorkflowID: "setflow-user/h"}); err != nil {
		t.Fatal(err)
	}
	var row struct {
		Status     string  `db:"status"`
		LastError  *string `db:"last_error"`
		WorkflowID string  `db:"workflow_id"`
	}
	get := func() {
		t.Helper()
		if err := db.Get(&row, `SELECT status, last_error, workflow_id FROM setflow_inbox WHERE dedupe_key = 'unlink:old'`); err != nil {
			t.Fatal(err)
		}
	}
	get()
	if row.Status != "parked" || row.LastError == nil || *row.LastError != "purge/run: broken" || row.WorkflowID != "setflow-user/h" {
		t.Fatalf("placeholder %+v", row)
	}
	// Parked again later: the same row, updated.
	if err := a.ParkEvent(ctx, reaction.ParkInput{EventKey: "unlink:old", Step: "purge/sessions", Reason: "down", WorkflowID: "setflow-user/h"}); err != nil {
		t.Fatal(err)
	}
	if err := a.UnparkEvent(ctx, "unlink:old"); err != nil {
		t.Fatal(err)
	}
	get()
	if row.Status != "dispatched" {
		t.Fatalf("after unpark: %+v", row)
	}
}
