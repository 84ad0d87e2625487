package statedb_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/setflow/setflow/internal/testenv"
	"github.com/setflow/setflow/userstate"
	"github.com/setflow/setflow/userstate/statedb"
)

// Every States implementation must pass the same contract.
func TestMemoryContract(t *testing.T) {
	runContract(t, func(t *testing.T) statedb.States { return statedb.NewMemory() })
}

func TestStoreContract(t *testing.T) {
	runContract(t, func(t *testing.T) statedb.States {
		db, _ := testenv.Database(t)
		return statedb.NewStore(db)
	})
}

// The Reader reads what the Store wrote, exactly as the Store reads it.
func TestReaderReadsTheStoresSnapshot(t *testing.T) {
	ctx := context.Background()
	db, _ := testenv.Database(t)
	st := statedb.NewStore(db)
	r, err := statedb.NewReader(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	sub := userstate.Subject{Hash: "h", Issuer: "iss", UserID: "u"}
	if _, err := r.Get(ctx, sub.Hash); !errors.Is(err, statedb.ErrNotFound) {
		t.Fatalf("reader before any event: %v, want ErrNotFound", err)
	}
	if _, err := st.Apply(ctx, sub, "k", lockAt(t0)); err != nil {
		t.Fatal(err)
	}
	if err := st.MarkSynced(ctx, sub.Hash, 1); err != nil {
		t.Fatal(err)
	}
	want, err := st.Get(ctx, sub.Hash)
	if err != nil {
		t.Fatal(err)
	}
	got, err := r.Get(ctx, sub.Hash)
	if err != nil || got.Subject != want.Subject || got.CRMVersion != 1 || got.State.Version != want.State.Version ||
		!got.State.Lock.At.Equal(want.State.Lock.At) {
		t.Fatalf("reader %+v %v, store %+v", got, err, want)
	}
}

// What fn writes through Locked's q commits with the lock, or not at all
// when fn fails.
func TestStoreLockedWritesInItsTransaction(t *testing.T) {
	ctx := context.Background()
	db, _ := testenv.Database(t)
	db.MustExec(`CREATE TABLE service_users (id text PRIMARY KEY, locked boolean NOT NULL)`)
	st := statedb.NewStore(db)
	sub := userstate.Subject{Hash: "h-locked", Issuer: "iss", UserID: "u"}
	if _, err := st.Apply(ctx, sub, "k", lockAt(t0)); err != nil {
		t.Fatal(err)
	}
	write := func(id string, fail error) error {
		return st.Locked(ctx, sub.Hash, func(q sqlx.ExecerContext, s userstate.State) error {
			if _, err := q.ExecContext(ctx, `INSERT INTO service_users VALUES ($1, $2)`, id, s.Lock.Value == userstate.Locked); err != nil {
				return err
			}
			return fail
		})
	}
	if err := write("rolled-back", errors.New("later failure")); err == nil {
		t.Fatal("fn's error was not returned")
	}
	if err := write("kept", nil); err != nil {
		t.Fatal(err)
	}
	var ids []string
	if err := db.Select(&ids, `SELECT id FROM service_users WHERE locked ORDER BY id`); err != nil || len(ids) != 1 || ids[0] != "kept" {
		t.Fatalf("rows %v (%v), want only [kept]", ids, err)
	}
}

// A bench removes only its own users.
func TestStoreDeleteUsers(t *testing.T) {
	ctx := context.Background()
	db, _ := testenv.Database(t)
	st := statedb.NewStore(db)
	for _, id := range []string{"bench-1-a", "bench-1-b", "bench-10-a", "user"} {
		if _, err := st.Apply(ctx, userstate.Subject{Hash: "h-" + id, Issuer: "iss", UserID: id}, "k", lockAt(t0)); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.DeleteUsers(ctx, "bench-1-"); err != nil {
		t.Fatal(err)
	}
	for id, kept := range map[string]bool{"bench-1-a": false, "bench-1-b": false, "bench-10-a": true, "user": true} {
		_, err := st.Get(ctx, "h-"+id)
		if (err == nil) != kept {
			t.Fatalf("%s: %v, kept want %v", id, err, kept)
		}
	}
	var events int
	if err := db.Get(&events, `SELECT count(*) FROM setflow_user_events`); err != nil || events != 2 {
		t.Fatalf("%d applied events left (%v), want 2", events, err)
	}
}

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func lockAt(at time.Time) func(userstate.State) (userstate.State, userstate.Decision) {
	yes := true
	return func(s userstate.State) (userstate.State, userstate.Decision) {
		return userstate.Apply(s, userstate.Change{Time: at, Lock: &yes, Fields: map[userstate.Field]string{userstate.Email: "a@example.test"}})
	}
}

func runContract(t *testing.T, newStates func(t *testing.T) statedb.States) {
	ctx := context.Background()
	sub := userstate.Subject{Hash: "h-701", Issuer: "https://kauth.kakao.com", UserID: "701"}
	t.Run("each key applies once", func(t *testing.T) {
		st := newStates(t)
		if _, err := st.Get(ctx, sub.Hash); !errors.Is(err, statedb.ErrNotFound) {
			t.Fatalf("Get before any event: %v, want ErrNotFound", err)
		}
		res, err := st.Apply(ctx, sub, "set:1", lockAt(t0))
		if err != nil || res.Repeat || res.Decision.Of("lock") != userstate.Applied || res.State.Version != 1 {
			t.Fatalf("first apply: %+v %v", res, err)
		}
		calls := 0
		again, err := st.Apply(ctx, sub, "set:1", func(s userstate.State) (userstate.State, userstate.Decision) {
			calls++
			return lockAt(t0.Add(time.Hour))(s)
		})
		if err != nil || !again.Repeat || calls != 0 || again.Decision.Of("lock") != userstate.Applied || again.State.Version != 1 {
			t.Fatalf("repeated key: %+v calls %d %v", again, calls, err)
		}
		snap, err := st.Get(ctx, sub.Hash)
		if err != nil || snap.Subject != sub || snap.State.Version != 1 || snap.CRMVersion != 0 ||
			snap.State.Lock.Value != userstate.Locked || !snap.State.Lock.At.Equal(t0) || snap.State.Field(userstate.Email) != "a@example.test" {
			t.Fatalf("snapshot: %+v %v", snap, err)
		}
		// A later key applies on top.
		if res, err := st.Apply(ctx, sub, "set:2", func(s userstate.State) (userstate.State, userstate.Decision) {
			return userstate.Apply(s, userstate.Change{Time: t0.Add(time.Minute), Reauth: true})
		}); err != nil || res.Repeat || res.State.Version != 2 || !res.State.Lock.At.Equal(t0) {
			t.Fatalf("second key: %+v %v", res, err)
		}
	})
	t.Run("the crm mark moves forward only, and follows changes the crm does not see", func(t *testing.T) {
		st := newStates(t)
		if _, err := st.Apply(ctx, sub, "k1", lockAt(t0)); err != nil {
			t.Fatal(err)
		}
		if err := st.MarkSynced(ctx, sub.Hash, 1); err != nil {
			t.Fatal(err)
		}
		if err := st.MarkSynced(ctx, sub.Hash, 0); err != nil {
			t.Fatal(err)
		}
		if snap, _ := st.Get(ctx, sub.Hash); snap.CRMVersion != 1 {
			t.Fatalf("crm version %d, want 1 (never moved back)", snap.CRMVersion)
		}
		// Re-auth leaves the contact as it was: a synced CRM stays synced.
		if _, err := st.Apply(ctx, sub, "k2", func(s userstate.State) (userstate.State, userstate.Decision) {
			return userstate.Apply(s, userstate.Change{Time: t0.Add(time.Minute), Reauth: true})
		}); err != nil {
			t.Fatal(err)
		}
		if snap, _ := st.Get(ctx, sub.Hash); snap.State.Version != 2 || snap.CRMVersion != 2 {
			t.Fatalf("after a change the crm does not see: version %d, crm %d; want 2, 2", snap.State.Version, snap.CRMVersion)
		}
		// A new email changes the contact: the CRM is behind.
		if _, err := st.Apply(ctx, sub, "k3", func(s userstate.State) (userstate.State, userstate.Decision) {
			return userstate.Apply(s, userstate.Change{Time: t0.Add(2 * time.Minute), Fields: map[userstate.Field]string{userstate.Email: "b@example.test"}})
		}); err != nil {
			t.Fatal(err)
		}
		if snap, _ := st.Get(ctx, sub.Hash); snap.State.Version != 3 || snap.CRMVersion != 2 {
			t.Fatalf("after a contact change: version %d, crm %d; want 3, 2", snap.State.Version, snap.CRMVersion)
		}
		if err := st.MarkSynced(ctx, "nobody", 5); err != nil {
			t.Fatalf("mark of an unknown user: %v", err)
		}
	})
	t.Run("concurrent applies for one user lose nothing", func(t *testing.T) {
		st := newStates(t)
		var wg sync.WaitGroup
		for i := range 20 {
			wg.Go(func() {
				at := t0.Add(time.Duration(i) * time.Second)
				if _, err := st.Apply(ctx, sub, "k"+at.String(), func(s userstate.State) (userstate.State, userstate.Decision) {
					return userstate.Apply(s, userstate.Change{Time: at, Reauth: true})
				}); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		snap, err := st.Get(ctx, sub.Hash)
		if err != nil || !snap.State.Reauth.Equal(t0.Add(19*time.Second)) {
			t.Fatalf("after 20 concurrent applies: reauth %v %v", snap.State.Reauth, err)
		}
		for i := range 20 {
			at := t0.Add(time.Duration(i) * time.Second)
			res, err := st.Apply(ctx, sub, "k"+at.String(), func(s userstate.State) (userstate.State, userstate.Decision) {
				t.Errorf("key %d applied twice", i)
				return s, userstate.Decision{}
			})
			if err != nil || !res.Repeat {
				t.Fatalf("key %d was not recorded: %+v %v", i, res, err)
			}
		}
	})
	t.Run("locked runs on the current state, one at a time with applies", func(t *testing.T) {
		st := newStates(t)
		err := st.Locked(ctx, sub.Hash, func(sqlx.ExecerContext, userstate.State) error {
			t.Error("ran for a user with no state")
			return nil
		})
		if !errors.Is(err, statedb.ErrNotFound) {
			t.Fatalf("Locked before any event: %v, want ErrNotFound", err)
		}
		if _, err := st.Apply(ctx, sub, "set:1", lockAt(t0)); err != nil {
			t.Fatal(err)
		}
		// An apply that starts while fn holds the lock ends after fn.
		inside, applied := make(chan struct{}), make(chan error, 1)
		var order []string
		var mu sync.Mutex
		note := func(s string) { mu.Lock(); order = append(order, s); mu.Unlock() }
		err = st.Locked(ctx, sub.Hash, func(_ sqlx.ExecerContext, s userstate.State) error {
			if s.Version != 1 || s.Lock.Value != userstate.Locked {
				t.Errorf("Locked saw %+v, want the locked state v1", s)
			}
			go func() {
				close(inside)
				_, err := st.Apply(ctx, sub, "set:2", func(s userstate.State) (userstate.State, userstate.Decision) {
					return userstate.Apply(s, userstate.Change{Time: t0.Add(time.Minute), Reauth: true})
				})
				note("apply")
				applied <- err
			}()
			<-inside
			time.Sleep(100 * time.Millisecond)
			note("locked")
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := <-applied; err != nil {
			t.Fatal(err)
		}
		if len(order) != 2 || order[0] != "locked" {
			t.Fatalf("order %v: the apply did not wait for the lock", order)
		}
		fnErr := errors.New("fn failed")
		if err := st.Locked(ctx, sub.Hash, func(_ sqlx.ExecerContext, s userstate.State) error {
			if s.Version != 2 {
				t.Errorf("Locked saw v%d, want the current v2", s.Version)
			}
			return fnErr
		}); !errors.Is(err, fnErr) {
			t.Fatalf("fn's error: %v", err)
		}
	})

}
