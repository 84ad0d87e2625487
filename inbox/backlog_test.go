package inbox_test

import (
	"context"
	"testing"
	"time"

	"github.com/setflow/setflow/inbox"
	"github.com/setflow/setflow/internal/testenv"
)

// TestPostgresBacklog: the backlog gauges' numbers — pending entries, the
// age of the oldest pending one (dispatched and parked ones do not count),
// and parked entries.
func TestPostgresBacklog(t *testing.T) {
	ctx := context.Background()
	db, _ := testenv.Database(t)
	s := inbox.NewPostgres(db)
	if b, err := s.Backlog(ctx); err != nil || b != (inbox.Backlog{}) {
		t.Fatalf("empty inbox: %+v, %v; want zeros", b, err)
	}
	for _, k := range []string{"old-dispatched", "old-parked", "pending-1", "pending-2", "parked"} {
		if _, err := s.Put(ctx, entry(k)); err != nil {
			t.Fatal(err)
		}
	}
	db.MustExec(`UPDATE setflow_inbox SET status = 'dispatched', received_at = now() - interval '2 hours' WHERE dedupe_key = 'old-dispatched'`)
	db.MustExec(`UPDATE setflow_inbox SET status = 'parked', received_at = now() - interval '3 hours' WHERE dedupe_key IN ('old-parked', 'parked')`)
	db.MustExec(`UPDATE setflow_inbox SET received_at = now() - interval '90 seconds' WHERE dedupe_key = 'pending-1'`)
	b, err := s.Backlog(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if b.Pending != 2 || b.Parked != 2 {
		t.Errorf("pending %d parked %d, want 2 and 2", b.Pending, b.Parked)
	}
	if b.OldestPendingAge < 89*time.Second || b.OldestPendingAge > 10*time.Minute {
		t.Errorf("oldest pending age %v, want about 90s (the oldest pending entry, not the older dispatched or parked ones)", b.OldestPendingAge)
	}
}
