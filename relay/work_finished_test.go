package relay_test

import (
	"context"
	"testing"
	"time"

	"github.com/setflow/setflow/audit"
	"github.com/setflow/setflow/audit/auditdb"
	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/inbox"
	"github.com/setflow/setflow/internal/testenv"
	"github.com/setflow/setflow/relay"
	"github.com/setflow/setflow/userstate/statedb"
)

// Retention never prunes an entry whose work is not finished: an event with
// no completed audit row yet, a SET of two events of which one completed, or
// the unlink whose purge is still pending in its user's state. Each store
// answers for its own tables.
func TestWorkFinishedKeepsUnfinishedEntries(t *testing.T) {
	ctx := context.Background()
	db, _ := testenv.Database(t)
	in := inbox.NewPostgres(db)
	unlinked := []event.Event{{Name: "user-unlinked"}}
	for k, evs := range map[string][]event.Event{"done": unlinked, "running": unlinked, "purge-pending": unlinked,
		"two-done": {{Name: "account-disabled"}, {Name: "credential-change"}}, "one-of-two": {{Name: "account-disabled"}, {Name: "credential-change"}}} {
		if _, err := in.Put(ctx, inbox.Entry{Raw: []byte("raw-" + k), Envelope: event.Envelope{Key: k, Source: event.SourceSET,
			ReceivedAt: time.Now().UTC(), Subject: event.Subject{Issuer: "iss", UserID: "u"}, Events: evs}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := in.Relay(ctx, 10, func(context.Context, inbox.Entry) (string, error) { return "wf", nil },
		func(int) time.Duration { return 0 }); err != nil {
		t.Fatal(err)
	}
	log := auditdb.NewStore(db)
	for _, r := range [][2]string{{"done", "user-unlinked"}, {"purge-pending", "user-unlinked"}, {"two-done", "account-disabled"},
		{"two-done", "credential-change"}, {"one-of-two", "credential-change"}} {
		if _, err := log.Append(ctx, audit.Record{EventKey: r[0], EventType: "t", SubjectHash: "h", Step: r[1] + "/completed", Outcome: "done"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := log.Append(ctx, audit.Record{EventKey: "running", EventType: "t", SubjectHash: "h", Step: "user-unlinked/received", Outcome: "done"}); err != nil {
		t.Fatal(err)
	}
	db.MustExec(`INSERT INTO setflow_user_state (subject_hash, issuer, user_id, state) VALUES ('h', 'iss', 'u', $1)`,
		`{"purge": {"cutoff": "2026-01-01T00:00:00Z", "due": "2026-02-01T00:00:00Z", "event_key": "purge-pending"}}`)
	time.Sleep(5 * time.Millisecond)
	if n, err := in.Prune(ctx, time.Millisecond, relay.WorkFinished(log, statedb.NewStore(db))); err != nil || n != 2 {
		t.Fatalf("pruned %d (%v), want only the two finished entries", n, err)
	}
	for k, want := range map[string]bool{"done": false, "two-done": false, "running": true, "purge-pending": true, "one-of-two": true} {
		_, err := in.Get(ctx, k)
		if kept := err == nil; kept != want {
			t.Fatalf("%s kept=%v after prune (%v), want %v", k, kept, err, want)
		}
	}
}
