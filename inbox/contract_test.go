package inbox_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/inbox"
	"github.com/setflow/setflow/internal/testenv"
)

// Every Store implementation must pass the same contract.
func TestMemoryContract(t *testing.T) {
	runContract(t, func(t *testing.T) inbox.Store { return inbox.NewMemory() })
}

func TestPostgresContract(t *testing.T) {
	runContract(t, func(t *testing.T) inbox.Store {
		db, _ := testenv.Database(t)
		return inbox.NewPostgres(db)
	})
}

func entry(key string) inbox.Entry {
	return inbox.Entry{Raw: []byte("raw-" + key), Envelope: event.Envelope{
		Key: key, Source: event.SourceSET, ReceivedAt: time.Now().UTC().Truncate(time.Microsecond),
		Subject: event.Subject{Issuer: "iss", UserID: "u"},
		Events:  []event.Event{{Type: "t", Name: "n", Time: time.Unix(1700000000, 0).UTC()}},
	}}
}

func noBackoff(int) time.Duration { return 0 }

func runContract(t *testing.T, newStore func(t *testing.T) inbox.Store) {
	ctx := context.Background()
	t.Run("put once, duplicates report not inserted", func(t *testing.T) {
		s := newStore(t)
		for i, want := range []bool{true, false, false} {
			ins, err := s.Put(ctx, entry("k1"))
			if err != nil || ins != want {
				t.Fatalf("put %d: inserted=%v err=%v, want %v", i, ins, err, want)
			}
		}
		e, err := s.Get(ctx, "k1")
		if err != nil || e.Status != inbox.StatusPending || string(e.Raw) != "raw-k1" || e.Envelope.Events[0].Name != "n" {
			t.Fatalf("get: %+v %v", e, err)
		}
		if _, err := s.Get(ctx, "nope"); !errors.Is(err, inbox.ErrNotFound) {
			t.Fatalf("unknown key: %v", err)
		}
	})
	t.Run("received after compares the envelope's receive time", func(t *testing.T) {
		s := newStore(t)
		e := entry("w1")
		at := time.Date(2025, 4, 16, 8, 0, 30, 123456000, time.UTC)
		e.Envelope.ReceivedAt = at
		if _, err := s.Put(ctx, e); err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			key   string
			after time.Time
			want  bool
		}{
			{"w1", at.Add(-time.Minute), true},
			{"w1", at.Add(-time.Microsecond), true},
			{"w1", at, false}, // strictly after
			{"w1", at.Add(time.Second), false},
			{"nope", at.Add(-time.Hour), false},
		} {
			got, err := s.ReceivedAfter(ctx, c.key, c.after)
			if err != nil || got != c.want {
				t.Fatalf("ReceivedAfter(%s, %v) = %v, %v; want %v", c.key, c.after, got, err, c.want)
			}
		}
	})
	t.Run("relay delivers each entry once and marks it dispatched", func(t *testing.T) {
		s := newStore(t)
		for _, k := range []string{"a", "b", "c"} {
			if _, err := s.Put(ctx, entry(k)); err != nil {
				t.Fatal(err)
			}
		}
		var got []string
		var mu sync.Mutex
		deliver := func(_ context.Context, e inbox.Entry) (string, error) {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, e.Envelope.Key)
			return "wf-" + e.Envelope.Key, nil
		}
		n, err := s.Relay(ctx, 10, deliver, noBackoff)
		if err != nil || n != 3 || len(got) != 3 {
			t.Fatalf("relay: n=%d err=%v got=%v", n, err, got)
		}
		if n, _ := s.Relay(ctx, 10, deliver, noBackoff); n != 0 {
			t.Fatalf("second relay claimed %d", n)
		}
		if e, _ := s.Get(ctx, "b"); e.Status != inbox.StatusDispatched || e.Attempts != 1 {
			t.Fatalf("after relay: %+v", e)
		}
	})
	t.Run("a failed delivery is retried after its backoff", func(t *testing.T) {
		s := newStore(t)
		if _, err := s.Put(ctx, entry("x")); err != nil {
			t.Fatal(err)
		}
		fail := func(context.Context, inbox.Entry) (string, error) { return "", errors.New("temporal down") }
		if n, err := s.Relay(ctx, 10, fail, func(int) time.Duration { return time.Hour }); err != nil || n != 1 {
			t.Fatalf("relay: %d %v", n, err)
		}
		if e, _ := s.Get(ctx, "x"); e.Status != inbox.StatusPending || e.Attempts != 1 {
			t.Fatalf("after failure: %+v", e)
		}
		ok := func(context.Context, inbox.Entry) (string, error) { return "wf", nil }
		if n, _ := s.Relay(ctx, 10, ok, noBackoff); n != 0 {
			t.Fatal("an entry was relayed before its backoff ended")
		}
	})
	t.Run("prune drops only old dispatched entries whose work is finished", func(t *testing.T) {
		s := newStore(t)
		for _, k := range []string{"a", "b", "unfinished"} {
			if _, err := s.Put(ctx, entry(k)); err != nil {
				t.Fatal(err)
			}
		}
		mustRelay(t, s, func(context.Context, inbox.Entry) (string, error) { return "wf", nil }, noBackoff)
		if _, err := s.Put(ctx, entry("c")); err != nil {
			t.Fatal(err)
		}
		mustRelay(t, s, func(context.Context, inbox.Entry) (string, error) { return "", errors.New("down") },
			func(int) time.Duration { return time.Hour })
		var asked []string
		finished := func(_ context.Context, envs []event.Envelope) (map[string]bool, error) {
			for _, env := range envs {
				if len(env.Events) != 1 || env.Events[0].Name != "n" {
					t.Errorf("finished got %s without its events: %+v", env.Key, env.Events)
				}
				asked = append(asked, env.Key)
			}
			return map[string]bool{"a": true, "b": true, "c": true}, nil
		}
		if n, err := s.Prune(ctx, time.Hour, finished); err != nil || n != 0 {
			t.Fatalf("prune with a long retention removed %d (%v)", n, err)
		}
		time.Sleep(5 * time.Millisecond)
		if n, err := s.Prune(ctx, time.Millisecond, finished); err != nil || n != 2 {
			t.Fatalf("pruned %d (%v), want the 2 finished dispatched entries", n, err)
		}
		if slices.Sort(asked); !slices.Equal(asked, []string{"a", "b", "unfinished"}) {
			t.Fatalf("finished was asked about %v, want only the old dispatched entries", asked)
		}
		if _, err := s.Get(ctx, "a"); !errors.Is(err, inbox.ErrNotFound) {
			t.Fatalf("a after prune: %v", err)
		}
		if e, err := s.Get(ctx, "unfinished"); err != nil || e.Status != inbox.StatusDispatched {
			t.Fatalf("an unfinished entry must survive: %+v %v", e, err)
		}
		if e, err := s.Get(ctx, "c"); err != nil || e.Status != inbox.StatusPending {
			t.Fatalf("pending entry must survive: %+v %v", e, err)
		}
		broken := func(context.Context, []event.Envelope) (map[string]bool, error) { return nil, errors.New("audit down") }
		if n, err := s.Prune(ctx, time.Millisecond, broken); err == nil || n != 0 {
			t.Fatalf("prune without an answer about finished work removed %d (%v), want an error and nothing removed", n, err)
		}
	})
	t.Run("a failure stops the rest of the batch, which waits for its backoff", func(t *testing.T) {
		s := newStore(t)
		for i := range 20 {
			if _, err := s.Put(ctx, entry(fmt.Sprint("k", i))); err != nil {
				t.Fatal(err)
			}
		}
		var tried atomic.Int64
		down := func(context.Context, inbox.Entry) (string, error) {
			tried.Add(1)
			time.Sleep(5 * time.Millisecond)
			return "", errors.New("temporal down")
		}
		if _, err := s.Relay(ctx, 20, down, func(int) time.Duration { return time.Hour }); err != nil {
			t.Fatal(err)
		}
		if n := tried.Load(); n >= 20 {
			t.Fatalf("all %d entries were tried against a down Temporal", n)
		}
		ok := func(context.Context, inbox.Entry) (string, error) { return "wf", nil }
		if n, _ := s.Relay(ctx, 20, ok, noBackoff); n != 0 {
			t.Fatalf("%d untried entries were relayed before the backoff", n)
		}
	})
	t.Run("park, unpark and requeue move only parked entries", func(t *testing.T) {
		s := newStore(t)
		if _, err := s.Put(ctx, entry("p")); err != nil {
			t.Fatal(err)
		}
		mustRelay(t, s, func(context.Context, inbox.Entry) (string, error) { return "wf-p", nil }, noBackoff)
		long := strings.Repeat("x", 2*inbox.MaxErrorLen)
		if err := s.Park(ctx, "p", "account-disabled/send_notice: "+long, "setflow-user/h"); err != nil {
			t.Fatal(err)
		}
		e, err := s.Get(ctx, "p")
		if err != nil || e.Status != inbox.StatusParked || e.WorkflowID != "setflow-user/h" || len(e.LastError) != inbox.MaxErrorLen ||
			!strings.HasPrefix(e.LastError, "account-disabled/send_notice: x") || string(e.Raw) != "raw-p" {
			t.Fatalf("parked: %+v %v", e, err)
		}
		if err := s.Unpark(ctx, "p"); err != nil {
			t.Fatal(err)
		}
		if e, _ := s.Get(ctx, "p"); e.Status != inbox.StatusDispatched || e.LastError != "" {
			t.Fatalf("unparked: %+v", e)
		}
		// Neither touches an entry that is not parked.
		if _, err := s.Put(ctx, entry("q")); err != nil {
			t.Fatal(err)
		}
		if err := s.Unpark(ctx, "q"); err != nil {
			t.Fatal(err)
		}
		if err := s.Requeue(ctx, "p"); err != nil {
			t.Fatal(err)
		}
		for k, want := range map[string]inbox.Status{"p": inbox.StatusDispatched, "q": inbox.StatusPending} {
			if e, _ := s.Get(ctx, k); e.Status != want {
				t.Fatalf("%s is %s, want %s", k, e.Status, want)
			}
		}
		// Requeued, a parked entry is relayed again at once.
		if err := s.Park(ctx, "p", "account-disabled/send_notice: down", "setflow-user/h"); err != nil {
			t.Fatal(err)
		}
		if err := s.Requeue(ctx, "p"); err != nil {
			t.Fatal(err)
		}
		if relayed := relayKeys(t, s); !slices.Equal(relayed, []string{"p", "q"}) {
			t.Fatalf("relayed %v after requeue, want p and q", relayed)
		}
	})
	t.Run("a key with no entry parks as a placeholder", func(t *testing.T) {
		s := newStore(t)
		if err := s.Park(ctx, "unlink:old", "purge/run: broken", "setflow-user/h"); err != nil {
			t.Fatal(err)
		}
		e, err := s.Get(ctx, "unlink:old")
		if err != nil || e.Status != inbox.StatusParked || e.LastError != "purge/run: broken" || e.WorkflowID != "setflow-user/h" ||
			len(e.Raw) != 0 || e.Envelope.Source != inbox.SourceParked || e.Envelope.Key != "unlink:old" {
			t.Fatalf("placeholder: %+v %v", e, err)
		}
		// Parked again later: the same entry, updated.
		if err := s.Park(ctx, "unlink:old", "purge/sessions: down", "setflow-user/h2"); err != nil {
			t.Fatal(err)
		}
		if e, _ := s.Get(ctx, "unlink:old"); e.LastError != "purge/sessions: down" || e.WorkflowID != "setflow-user/h2" {
			t.Fatalf("parked again: %+v", e)
		}
		if got, _ := s.List(ctx, inbox.Filter{}); len(got) != 1 {
			t.Fatalf("%d entries after parking twice, want 1", len(got))
		}
	})
	t.Run("list filters and orders", func(t *testing.T) {
		s := newStore(t)
		for _, k := range []string{"a", "b", "c"} {
			e := entry(k)
			if k == "b" {
				e.Envelope.Source = event.SourceUnlink
				e.Envelope.Events[0].Name = "user-unlinked"
			}
			if _, err := s.Put(ctx, e); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Park(ctx, "a", "account-disabled/send_notice: smtp down", "wf-a"); err != nil {
			t.Fatal(err)
		}
		if err := s.Park(ctx, "c", "revoke_sessions: callback down", "wf-c"); err != nil {
			t.Fatal(err)
		}
		// A step a policy (or a renotify) runs twice in one event.
		if err := s.Park(ctx, "b", "user-unlinked/send_notice#2: smtp down", "wf-b"); err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		for _, c := range []struct {
			name string
			f    inbox.Filter
			want []string
		}{
			{"all, newest first", inbox.Filter{}, []string{"c", "b", "a"}},
			{"oldest first, limited", inbox.Filter{OldestFirst: true, Limit: 2}, []string{"a", "b"}},
			{"status", inbox.Filter{Status: inbox.StatusParked}, []string{"c", "b", "a"}},
			{"source", inbox.Filter{Source: event.SourceUnlink}, []string{"b"}},
			{"event name", inbox.Filter{Event: "user-unlinked"}, []string{"b"}},
			{"event type", inbox.Filter{Event: "t"}, []string{"c", "b", "a"}},
			{"step with its event", inbox.Filter{Step: "account-disabled/send_notice"}, []string{"a"}},
			{"step alone, also repeated", inbox.Filter{Step: "send_notice"}, []string{"b", "a"}},
			{"repeated step with its event", inbox.Filter{Step: "user-unlinked/send_notice"}, []string{"b"}},
			{"step without an event", inbox.Filter{Step: "revoke_sessions"}, []string{"c"}},
			{"unknown step", inbox.Filter{Step: "sync_crm"}, nil},
			{"received since", inbox.Filter{From: now.Add(-time.Hour)}, []string{"c", "b", "a"}},
			{"received later", inbox.Filter{From: now.Add(time.Hour)}, nil},
			{"received until", inbox.Filter{Until: now.Add(-time.Hour)}, nil},
		} {
			got, err := s.List(ctx, c.f)
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			var keys []string
			for _, e := range got {
				if e.Raw != nil {
					t.Fatalf("%s: List loaded the raw body of %s", c.name, e.Envelope.Key)
				}
				keys = append(keys, e.Envelope.Key)
			}
			if !slices.Equal(keys, c.want) {
				t.Fatalf("%s: %v, want %v", c.name, keys, c.want)
			}
		}
		got, _ := s.List(ctx, inbox.Filter{Step: "account-disabled/send_notice"})
		if len(got) != 1 || got[0].WorkflowID != "wf-a" || got[0].ReceivedAt.IsZero() || got[0].Attempts != 0 {
			t.Fatalf("listed %+v", got)
		}
	})
	t.Run("relay records the workflow and the last failure", func(t *testing.T) {
		s := newStore(t)
		if _, err := s.Put(ctx, entry("r")); err != nil {
			t.Fatal(err)
		}
		mustRelay(t, s, func(context.Context, inbox.Entry) (string, error) { return "", errors.New("temporal down") }, noBackoff)
		if e, _ := s.Get(ctx, "r"); e.LastError != "temporal down" || !e.DispatchedAt.IsZero() {
			t.Fatalf("after a failure: %+v", e)
		}
		mustRelay(t, s, func(context.Context, inbox.Entry) (string, error) { return "wf-r", nil }, noBackoff)
		if e, _ := s.Get(ctx, "r"); e.LastError != "" || e.WorkflowID != "wf-r" || e.DispatchedAt.IsZero() {
			t.Fatalf("after delivery: %+v", e)
		}
	})
	t.Run("concurrent relays never deliver an entry twice", func(t *testing.T) {
		s := newStore(t)
		for i := range 40 {
			if _, err := s.Put(ctx, entry(string(rune('A'+i)))); err != nil {
				t.Fatal(err)
			}
		}
		var calls atomic.Int64
		seen := sync.Map{}
		deliver := func(_ context.Context, e inbox.Entry) (string, error) {
			calls.Add(1)
			if _, dup := seen.LoadOrStore(e.Envelope.Key, true); dup {
				t.Errorf("%s delivered twice", e.Envelope.Key)
			}
			time.Sleep(time.Millisecond)
			return "wf", nil
		}
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					n, err := s.Relay(ctx, 5, deliver, noBackoff)
					if err != nil {
						t.Error(err)
						return
					}
					if n == 0 {
						return
					}
				}
			}()
		}
		wg.Wait()
		if calls.Load() != 40 {
			t.Fatalf("%d deliveries, want 40", calls.Load())
		}
	})
}

// A bench counts and removes only its own entries (by key prefix) in a
// shared database.
func TestPostgresCountAndDeleteKeys(t *testing.T) {
	ctx := context.Background()
	db, _ := testenv.Database(t)
	s := inbox.NewPostgres(db)
	for _, k := range []string{"bench-1:a", "bench-1:b", "bench-10:a", "other"} {
		if _, err := s.Put(ctx, entry(k)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Park(ctx, "bench-1:b", "x: y", "wf"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		prefix string
		status inbox.Status
		want   int
	}{{"bench-1:", "", 2}, {"bench-1", "", 3}, {"bench-1:", inbox.StatusParked, 1}, {"%", "", 0}} {
		if n, err := s.CountKeys(ctx, c.prefix, c.status); err != nil || n != c.want {
			t.Fatalf("CountKeys(%q, %q) = %d, %v; want %d", c.prefix, c.status, n, err, c.want)
		}
	}
	if err := s.DeleteKeys(ctx, "bench-1:"); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.List(ctx, inbox.Filter{OldestFirst: true}); len(got) != 2 || got[0].Envelope.Key != "bench-10:a" {
		t.Fatalf("left %+v, want bench-10:a and other", got)
	}
}

// relayKeys runs one relay pass whose deliveries succeed and returns the
// keys handed over, sorted.
func relayKeys(t *testing.T, s inbox.Store) []string {
	t.Helper()
	var mu sync.Mutex
	var keys []string
	mustRelay(t, s, func(_ context.Context, e inbox.Entry) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		keys = append(keys, e.Envelope.Key)
		return "wf", nil
	}, noBackoff)
	slices.Sort(keys)
	return keys
}

// mustRelay runs one relay pass of up to 10 entries; the store itself must
// not fail (a delivery's failure is recorded, not returned).
func mustRelay(t *testing.T, s inbox.Store, deliver inbox.Deliver, backoff inbox.Backoff) {
	t.Helper()
	if _, err := s.Relay(context.Background(), 10, deliver, backoff); err != nil {
		t.Fatal(err)
	}
}

// One entry whose stored envelope no longer decodes must not stop retention:
// it is kept (its work cannot be known finished) and the others are pruned.
// An envelope without its key (a placeholder's) is judged by the row's key.
func TestPostgresPruneGoesOnPastAnUndecodableEntry(t *testing.T) {
	ctx := context.Background()
	db, _ := testenv.Database(t)
	s := inbox.NewPostgres(db)
	for _, k := range []string{"a", "corrupt", "keyless", "z"} {
		if _, err := s.Put(ctx, entry(k)); err != nil {
			t.Fatal(err)
		}
	}
	mustRelay(t, s, func(context.Context, inbox.Entry) (string, error) { return "wf", nil }, noBackoff)
	db.MustExec(`UPDATE setflow_inbox SET envelope = '{"key": 5}' WHERE dedupe_key = 'corrupt'`)
	db.MustExec(`UPDATE setflow_inbox SET envelope = envelope - 'key' WHERE dedupe_key = 'keyless'`)
	time.Sleep(5 * time.Millisecond)
	var asked []string
	n, err := s.Prune(ctx, time.Millisecond, func(_ context.Context, envs []event.Envelope) (map[string]bool, error) {
		done := map[string]bool{}
		for _, e := range envs {
			asked = append(asked, e.Key)
			done[e.Key] = true
		}
		return done, nil
	})
	if err != nil || n != 3 {
		t.Fatalf("pruned %d (%v), want a, keyless and z; asked about %v", n, err, asked)
	}
	var left []string
	if err := db.SelectContext(ctx, &left, `SELECT dedupe_key FROM setflow_inbox`); err != nil || !slices.Equal(left, []string{"corrupt"}) {
		t.Fatalf("left %v (%v), want only the corrupt entry", left, err)
	}
}

// An entry whose stored envelope does not decode stays visible: List and Get
// return it (key, source, status) marked Unreadable instead of failing for
// every entry, and the relay parks it (retrying cannot help) while the others
// go; it is then listed among the parked, under the step "relay".
func TestPostgresUndecodableEntryStaysVisible(t *testing.T) {
	ctx := context.Background()
	db, _ := testenv.Database(t)
	s := inbox.NewPostgres(db)
	for _, k := range []string{"a", "corrupt", "z"} {
		if _, err := s.Put(ctx, entry(k)); err != nil {
			t.Fatal(err)
		}
	}
	db.MustExec(`UPDATE setflow_inbox SET envelope = '{"events": 5}' WHERE dedupe_key = 'corrupt'`)
	list, err := s.List(ctx, inbox.Filter{OldestFirst: true})
	if err != nil || len(list) != 3 {
		t.Fatalf("List = %d entries, %v; want all 3", len(list), err)
	}
	for _, e := range list {
		if (e.Envelope.Key == "corrupt") != (e.Unreadable != "") || e.Envelope.Source != event.SourceSET {
			t.Errorf("%s: source %q, unreadable %q", e.Envelope.Key, e.Envelope.Source, e.Unreadable)
		}
	}
	got, err := s.Get(ctx, "corrupt")
	if err != nil || got.Unreadable == "" || got.Status != inbox.StatusPending || string(got.Raw) != "raw-corrupt" {
		t.Fatalf("Get = %+v, %v; want the pending entry with its raw body, marked unreadable", got, err)
	}
	delivered := relayKeys(t, s)
	if got, _ := s.Get(ctx, "corrupt"); !slices.Equal(delivered, []string{"a", "z"}) || got.Status != inbox.StatusParked ||
		!strings.HasPrefix(got.LastError, "relay: ") {
		t.Fatalf("delivered %v; corrupt entry %s, last error %q: want it parked by the relay", delivered, got.Status, got.LastError)
	}
	if parked, err := s.List(ctx, inbox.Filter{Status: inbox.StatusParked, Step: "relay"}); err != nil || len(parked) != 1 {
		t.Fatalf("parked under step relay: %d, %v", len(parked), err)
	}
}
