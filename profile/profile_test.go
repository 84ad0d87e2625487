package profile

import (
	"context"
	"database/sql"
	"errors"
	"testing"
	"time"

	"github.com/setflow/setflow/internal/testenv"
)

var k = Key{Issuer: "https://kauth.kakao.com", UserID: "701541"}

// Project writes the whole row each time: a blanked field becomes NULL, and
// the locale, which no event carries, survives.
func TestProjectReplacesTheRowAndKeepsLocale(t *testing.T) {
	db, _ := testenv.Database(t)
	s := NewStore(db)
	ctx := context.Background()
	if _, err := s.Get(ctx, k); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get on empty table: %v, want ErrNotFound", err)
	}
	t0 := time.Now().UTC().Truncate(time.Second)
	p := Projection{
		Email: sql.NullString{String: "a@example.test", Valid: true}, Nickname: sql.NullString{String: "A", Valid: true},
		Consents: []string{"account_email"}, Linked: sql.NullBool{Bool: true, Valid: true},
		LinkChangedAt: sql.NullTime{Time: t0, Valid: true}, Locked: true, LockChangedAt: sql.NullTime{Time: t0, Valid: true},
	}
	if err := Project(ctx, db, k, p); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE user_profiles SET locale = 'ko' WHERE user_id = $1`, k.UserID); err != nil {
		t.Fatal(err)
	}
	p.Email, p.Locked = sql.NullString{}, false
	if err := Project(ctx, db, k, p); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, k)
	if err != nil {
		t.Fatal(err)
	}
	if got.Email.Valid || got.Locked || got.Nickname.String != "A" || got.Locale.String != "ko" ||
		!got.Linked.Bool || len(got.Consents) != 1 || !got.LinkChangedAt.Time.Equal(t0) {
		t.Fatalf("row after second projection: %+v", got)
	}
}
