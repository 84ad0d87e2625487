package auditdb_test

import (
	"context"
	"testing"

	"github.com/setflow/setflow/audit"
	"github.com/setflow/setflow/audit/auditdb"
	"github.com/setflow/setflow/internal/testenv"
)

// A bench watches its own events' rows, and removes only them.
func TestProgressUnfinishedAndDeleteEvents(t *testing.T) {
	ctx := context.Background()
	db, _ := testenv.Database(t)
	log := auditdb.NewStore(db)
	for _, r := range []audit.Record{
		{EventKey: "b1:done", SubjectHash: "h1", Step: "account-disabled/received", Outcome: "done"},
		{EventKey: "b1:done", SubjectHash: "h1", Step: "account-disabled/completed", Outcome: "done"},
		{EventKey: "b1:open", SubjectHash: "h2", Step: "account-disabled/received", Outcome: "done"},
		{EventKey: "b1:open", SubjectHash: "h2", Step: "account-disabled/send_notice", Outcome: "failed"},
		{EventKey: "b10:x", SubjectHash: "h3", Step: "account-disabled/received", Outcome: "done"},
	} {
		r.EventType = "t"
		if _, err := log.Append(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if pr, err := log.ProgressOf(ctx, "b1:"); err != nil || pr != (audit.Progress{Rows: 4, Completed: 1, Failed: 1}) {
		t.Fatalf("progress %+v %v", pr, err)
	}
	if h, ok, err := log.Unfinished(ctx, "b1:"); err != nil || !ok || h != "h2" {
		t.Fatalf("unfinished %q %v %v, want h2", h, ok, err)
	}
	if err := log.DeleteEvents(ctx, "b1:"); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := log.Unfinished(ctx, "b1:"); err != nil || ok {
		t.Fatalf("unfinished after delete: %v %v", ok, err)
	}
	if pr, _ := log.ProgressOf(ctx, "b10:"); pr.Rows != 1 {
		t.Fatalf("another prefix's rows: %+v, want 1 kept", pr)
	}
}
