package statedb

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/setflow/setflow/internal/testenv"
	"github.com/setflow/setflow/profile"
	"github.com/setflow/setflow/userstate"
)

// The Store projects each new state into the service's profile table in
// the apply's transaction (what Memory does not do; the rest of Apply, Get
// and MarkSynced is the contract's).
func TestStoreProjectsIntoTheProfile(t *testing.T) {
	db, _ := testenv.Database(t)
	st := NewStore(db)
	ctx := context.Background()
	sub := userstate.Subject{Hash: "h-701", Issuer: "https://kauth.kakao.com", UserID: "701"}
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	locked := true
	if _, err := st.Apply(ctx, sub, "set:1", func(s userstate.State) (userstate.State, userstate.Decision) {
		return userstate.Apply(s, userstate.Change{Time: t0, Lock: &locked, Fields: map[userstate.Field]string{userstate.Email: "a@example.test"}})
	}); err != nil {
		t.Fatal(err)
	}
	p, err := profile.NewStore(db).Get(ctx, profile.Key{Issuer: sub.Issuer, UserID: sub.UserID})
	if err != nil || !p.Locked || p.Email.String != "a@example.test" || !p.LockChangedAt.Time.Equal(t0) {
		t.Fatalf("projection: %+v %v", p, err)
	}
}

// Concurrent applies for one user serialise on its row and lose nothing;
// applies for another user do not wait on that row.
func TestStoreSerialisesOneUserOnly(t *testing.T) {
	db, _ := testenv.Database(t)
	st := NewStore(db)
	ctx := context.Background()
	a := userstate.Subject{Hash: "h-a", Issuer: "i", UserID: "a"}
	b := userstate.Subject{Hash: "h-b", Issuer: "i", UserID: "b"}
	base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			at := base.Add(time.Duration(i) * time.Second)
			if _, err := st.Apply(ctx, a, "k"+at.String(), func(s userstate.State) (userstate.State, userstate.Decision) {
				return userstate.Apply(s, userstate.Change{Time: at, Reauth: true})
			}); err != nil {
				t.Error(err)
			}
		}()
	}
	// Hold user a's row in an open transaction: user b must still apply.
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO setflow_user_state (subject_hash, issuer, user_id) VALUES ($1, 'i', 'a') ON CONFLICT DO NOTHING`, a.Hash); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, `SELECT 1 FROM setflow_user_state WHERE subject_hash = $1 FOR UPDATE`, a.Hash); err != nil {
		t.Fatal(err)
	}
	bctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	if _, err := st.Apply(bctx, b, "kb", func(s userstate.State) (userstate.State, userstate.Decision) {
		return userstate.Apply(s, userstate.Change{Time: base, Reauth: true})
	}); err != nil {
		t.Fatalf("user b waited on user a's row: %v", err)
	}
	cancel()
	_ = tx.Rollback()
	wg.Wait()
	snap, err := st.Get(ctx, a.Hash)
	var applied int
	if err := db.Get(&applied, `SELECT count(*) FROM setflow_user_events WHERE subject_hash = $1`, a.Hash); err != nil {
		t.Fatal(err)
	}
	if err != nil || applied != 20 || !snap.State.Reauth.Equal(base.Add(19*time.Second)) {
		t.Fatalf("user a after 20 concurrent applies: %d recorded, reauth %v %v", applied, snap.State.Reauth, err)
	}
}
