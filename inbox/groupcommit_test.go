package inbox_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/inbox"
	"github.com/setflow/setflow/internal/testenv"
)

// holdKey inserts key in a transaction left open, so that a Put of the same
// key waits for it; release rolls it back.
func holdKey(t *testing.T, db *sqlx.DB, key string) (release func()) {
	t.Helper()
	tx, err := db.Beginx()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback() })
	if _, err := tx.Exec(`INSERT INTO setflow_inbox (dedupe_key, source, raw, envelope) VALUES ($1, 'set', '', '{}')`, key); err != nil {
		t.Fatal(err)
	}
	return func() {
		if err := tx.Rollback(); err != nil {
			t.Fatal(err)
		}
	}
}

// waitInsertBlocked waits until an inbox insert of this database waits for a
// row lock: the statement was sent.
func waitInsertBlocked(t *testing.T, db *sqlx.DB) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		var n int
		if err := db.Get(&n, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%INSERT INTO setflow_inbox%'`); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
	}
	t.Fatal("no inbox insert was sent to the database")
}

func waitQueued(t *testing.T, s *inbox.Postgres, n int) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		if q := s.PutStats().Queued; q == n {
			return
		} else if q > n {
			t.Fatalf("%d Puts queued, want %d", q, n)
		}
	}
	t.Fatalf("%d Puts queued, want %d", s.PutStats().Queued, n)
}

type putResult struct {
	key      string
	inserted bool
	err      error
}

// putAll runs a Put per key concurrently; results arrive on the channel.
func putAll(s inbox.Writer, keys ...string) <-chan putResult {
	out := make(chan putResult, len(keys))
	for _, k := range keys {
		go func() {
			ins, err := s.Put(context.Background(), entry(k))
			out <- putResult{k, ins, err}
		}()
	}
	return out
}

func collect(t *testing.T, ch <-chan putResult, n int) []putResult {
	t.Helper()
	var rs []putResult
	for range n {
		select {
		case r := <-ch:
			rs = append(rs, r)
		case <-time.After(30 * time.Second):
			t.Fatalf("only %d of %d Puts returned", len(rs), n)
		}
	}
	return rs
}

func storedKeys(t *testing.T, db *sqlx.DB) map[string]bool {
	t.Helper()
	var keys []string
	if err := db.Select(&keys, `SELECT dedupe_key FROM setflow_inbox`); err != nil {
		t.Fatal(err)
	}
	m := map[string]bool{}
	for _, k := range keys {
		m[k] = true
	}
	return m
}

// gatedStore returns a store with one commit slot, held busy by a Put of
// "gate" that waits for a row lock until release is called. Puts made before
// release queue and then share the next commit.
// setup, when set, prepares the database first.
func gatedStore(t *testing.T, setup func(db *sqlx.DB)) (db *sqlx.DB, s *inbox.Postgres, gate <-chan putResult, release func()) {
	t.Helper()
	db, _ = testenv.Database(t)
	if setup != nil {
		setup(db)
	}
	s = inbox.NewPostgres(db)
	s.MaxInFlight = 1
	release = holdKey(t, db, "gate")
	gate = putAll(s, "gate")
	waitInsertBlocked(t, db)
	return db, s, gate, release
}

// Puts that arrive while a commit is in flight share the next one, and a key
// that comes twice in that batch is stored once and answered once as new,
// once as a duplicate.
func TestPostgresPutsArrivingDuringACommitShareTheNext(t *testing.T) {
	db, s, gate, release := gatedStore(t, nil)
	var keys []string
	for i := range 15 {
		keys = append(keys, fmt.Sprint("k", i))
	}
	keys = append(keys, "k0", "k3", "k3", "k14", "k7") // in-batch duplicates
	results := putAll(s, keys...)
	waitQueued(t, s, len(keys))
	release()

	if g := collect(t, gate, 1)[0]; g.err != nil || !g.inserted {
		t.Fatalf("gate: inserted=%v err=%v", g.inserted, g.err)
	}
	inserted := map[string]int{}
	for _, r := range collect(t, results, len(keys)) {
		if r.err != nil {
			t.Fatalf("%s: %v", r.key, r.err)
		}
		if r.inserted {
			inserted[r.key]++
		}
	}
	for i := range 15 {
		if k := fmt.Sprint("k", i); inserted[k] != 1 {
			t.Errorf("%s answered as inserted %d times, want once (the other copies as duplicates)", k, inserted[k])
		}
	}
	st := s.PutStats()
	if st.Batches != 2 || st.Entries != int64(len(keys)+1) || st.Failed != 0 {
		t.Fatalf("stats %+v: want the gate's commit and one shared commit of %d Puts", st, len(keys))
	}
	if stored := storedKeys(t, db); len(stored) != 16 {
		t.Fatalf("%d rows stored, want 16", len(stored))
	}
}

// Rows that share a commit each keep their own raw body and envelope: bodies
// of different lengths (one empty, one with every byte value) and envelopes
// with quotes, backslashes and non-ASCII text come back byte for byte.
func TestPostgresBatchStoresEachRowsOwnBodyAndEnvelope(t *testing.T) {
	_, s, gate, release := gatedStore(t, nil)
	every := make([]byte, 256)
	for i := range every {
		every[i] = byte(i)
	}
	want := map[string]inbox.Entry{}
	for i, raw := range [][]byte{[]byte("a.b.c"), nil, every, []byte(strings.Repeat("x", 5000)), []byte(`{"x":"\\u0000"}`)} {
		e := entry(fmt.Sprint("body-", i))
		e.Raw = raw
		e.Envelope.Events[0].Name = fmt.Sprintf(`n"%d\\ 한글 ,]} %s`, i, strings.Repeat("é", i*40))
		want[e.Envelope.Key] = e
	}
	results := make(chan error, len(want))
	for _, e := range want {
		go func() { _, err := s.Put(context.Background(), e); results <- err }()
	}
	waitQueued(t, s, len(want))
	release()
	collect(t, gate, 1)
	for range want {
		if err := <-results; err != nil {
			t.Fatal(err)
		}
	}
	if st := s.PutStats(); st.Batches != 2 {
		t.Fatalf("%d commits, want the gate's and one shared by the %d Puts", st.Batches, len(want))
	}
	for k, e := range want {
		got, err := s.Get(context.Background(), k)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Raw, e.Raw) || got.Envelope.Events[0].Name != e.Envelope.Events[0].Name || got.Envelope.Key != k {
			t.Errorf("%s: stored raw %q, event %q; want %q, %q", k, got.Raw, got.Envelope.Events[0].Name, e.Raw, e.Envelope.Events[0].Name)
		}
	}
}

// A batch the database refuses (a trigger rejects one of its rows) fails
// exactly the Puts it held, and stores none of its rows, not even those
// inserted before the failing one. The store then goes on.
func TestPostgresFailedBatchFailsExactlyItsPuts(t *testing.T) {
	db, s, gate, release := gatedStore(t, func(db *sqlx.DB) {
		db.MustExec(`CREATE FUNCTION reject_poison() RETURNS trigger LANGUAGE plpgsql AS $$
			BEGIN
				IF NEW.dedupe_key = 'poison' THEN RAISE EXCEPTION 'injected failure'; END IF;
				RETURN NEW;
			END $$`)
		db.MustExec(`CREATE TRIGGER reject_poison BEFORE INSERT ON setflow_inbox FOR EACH ROW EXECUTE FUNCTION reject_poison()`)
	})
	// Rows are inserted in key order: the p-keys come before "poison".
	batch := []string{"p1", "p2", "poison", "p3", "p1"}
	results := putAll(s, batch...)
	waitQueued(t, s, len(batch))
	release()

	if g := collect(t, gate, 1)[0]; g.err != nil || !g.inserted {
		t.Fatalf("gate (the commit before): inserted=%v err=%v", g.inserted, g.err)
	}
	for _, r := range collect(t, results, len(batch)) {
		if r.err == nil {
			t.Errorf("%s: no error from a failed batch (inserted=%v)", r.key, r.inserted)
		}
	}
	stored := storedKeys(t, db)
	for _, k := range batch {
		if stored[k] {
			t.Errorf("%s stored by a failed batch", k)
		}
	}
	if st := s.PutStats(); st.Batches != 2 || st.Failed != 1 {
		t.Fatalf("stats %+v: want 2 commits, 1 failed", st)
	}
	after := collect(t, putAll(s, "p1", "p4"), 2)
	for _, r := range after {
		if r.err != nil || !r.inserted {
			t.Fatalf("%s after the failed batch: inserted=%v err=%v", r.key, r.inserted, r.err)
		}
	}
}

// A lone Put on an idle store is sent to the database at once: nothing else
// is put, and the insert still reaches the database (it is seen waiting for
// the row lock another transaction holds on its key).
func TestPostgresLonePutIsSentAtOnce(t *testing.T) {
	db, _ := testenv.Database(t)
	s := inbox.NewPostgres(db)
	release := holdKey(t, db, "alone")
	res := putAll(s, "alone")
	waitInsertBlocked(t, db)
	if st := s.PutStats(); st.Queued != 0 {
		t.Fatalf("stats %+v: the lone Put is still queued", st)
	}
	release()
	if r := collect(t, res, 1)[0]; r.err != nil || !r.inserted {
		t.Fatalf("lone put: inserted=%v err=%v", r.inserted, r.err)
	}
	if st := s.PutStats(); st.Batches != 1 || st.Entries != 1 {
		t.Fatalf("stats %+v, want one commit of one Put", st)
	}
}

// Under concurrency (default settings) commits are shared, and every Put
// that returned without error has its row, including Puts whose deadline cut
// some others short.
func TestPostgresEveryAcknowledgedPutIsStored(t *testing.T) {
	db, _ := testenv.Database(t)
	s := inbox.NewPostgres(db)
	const workers, each = 32, 25
	var mu sync.Mutex
	acked := map[string]bool{}
	var failures int
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				// Every fifth key repeats one another worker also puts.
				k := fmt.Sprintf("w%d-%d", w, i)
				if i%5 == 0 {
					k = fmt.Sprintf("shared-%d", i)
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(1+i%7)*time.Millisecond*40)
				_, err := s.Put(ctx, entry(k))
				cancel()
				mu.Lock()
				if err == nil {
					acked[k] = true
				} else if errors.Is(err, context.DeadlineExceeded) {
					failures++
				} else {
					t.Errorf("%s: %v", k, err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	stored := storedKeys(t, db)
	for k := range acked {
		if !stored[k] {
			t.Errorf("%s was acknowledged but is not stored", k)
		}
	}
	st := s.PutStats()
	t.Logf("%d Puts, %d acknowledged keys, %d timed out; %+v", workers*each, len(acked), failures, st)
	if st.Batches >= workers*each {
		t.Fatalf("%d commits for %d concurrent Puts: none shared", st.Batches, workers*each)
	}
}

// Wake-up NOTIFYs: the first commit after a quiet spell is notified at once,
// and the commits that follow within NotifyGap share one more NOTIFY, sent
// when the gap ends, instead of one each.
func TestPostgresCommitsInAGapShareOneNotify(t *testing.T) {
	db, url := testenv.Database(t)
	wake, stop, err := inbox.Listen(url)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	s := inbox.NewPostgres(db)
	s.NotifyGap = 2 * time.Second
	put := func(key string) {
		t.Helper()
		if _, err := s.Put(context.Background(), inbox.Entry{Envelope: event.Envelope{Key: key, Source: event.SourceSET}, Raw: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	waitWake := func(what string) {
		t.Helper()
		select {
		case <-wake:
		case <-time.After(30 * time.Second):
			t.Fatalf("no NOTIFY %s", what)
		}
	}
	put("first")
	waitWake("for the first commit")
	if n := s.PutStats().Notifies; n != 1 {
		t.Fatalf("%d NOTIFYs after the first commit, want 1", n)
	}
	for i := range 3 {
		put(fmt.Sprint("within-the-gap-", i))
	}
	if st := s.PutStats(); st.Batches != 4 || st.Notifies != 1 {
		t.Fatalf("stats %+v: want 4 commits and still 1 NOTIFY inside the gap", st)
	}
	waitWake("for the commits inside the gap")
	time.Sleep(s.NotifyGap + time.Second)
	if n := s.PutStats().Notifies; n != 2 {
		t.Fatalf("%d NOTIFYs for 4 commits (1, then 3 inside one gap), want 2", n)
	}
}
