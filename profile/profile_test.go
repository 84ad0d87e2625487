package profile

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/setflow/setflow/internal/testenv"
)

func newStore(t *testing.T) *Store {
	db, _ := testenv.Database(t)
	return NewStore(db)
}

var k = Key{Issuer: "https://kauth.kakao.com", UserID: "701541"}

// An account-enabled that happened before an account-disabled must not unlock
// the account, whatever order they arrive in.
func TestLateUnlockDoesNotUndoLaterLock(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	t0 := time.Now().Truncate(time.Second)
	if ok, err := s.SetLocked(ctx, k, true, t0); err != nil || !ok {
		t.Fatalf("lock: %v %v", ok, err)
	}
	if ok, err := s.SetLocked(ctx, k, false, t0.Add(-time.Minute)); err != nil || ok {
		t.Fatalf("older unlock applied=%v err=%v, want not applied", ok, err)
	}
	p, _ := s.Get(ctx, k)
	if !p.Locked {
		t.Fatal("older unlock undid the lock")
	}
	if ok, _ := s.SetLocked(ctx, k, false, t0.Add(time.Minute)); !ok {
		t.Fatal("newer unlock not applied")
	}
	p, _ = s.Get(ctx, k)
	if p.Locked {
		t.Fatal("newer unlock did not unlock")
	}
}

func TestConsentWithdrawDeletesItsFields(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	t0 := time.Now()
	email, nick, phone := "a@example.com", "nick", "+82 10-0000-0000"
	if _, err := s.UpdateFields(ctx, k, Fields{Email: &email, Nickname: &nick, PhoneNumber: &phone}, t0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateConsents(ctx, k, []string{"account_email", "profile_nickname", "phone_number"}, nil, t0); err != nil {
		t.Fatal(err)
	}
	cleared, err := s.UpdateConsents(ctx, k, nil, []string{"account_email"}, t0.Add(time.Second))
	if err != nil || !slices.Equal(cleared, []string{"email"}) {
		t.Fatalf("cleared %v %v", cleared, err)
	}
	p, _ := s.Get(ctx, k)
	if p.Email.Valid || p.Nickname.String != nick || p.PhoneNumber.String != phone {
		t.Fatalf("after withdraw: %+v", p)
	}
	if !slices.Equal([]string(p.Consents), []string{"phone_number", "profile_nickname"}) {
		t.Fatalf("consents %v", p.Consents)
	}
	// An older consent event arriving late changes nothing.
	if cleared, _ := s.UpdateConsents(ctx, k, []string{"account_email"}, nil, t0.Add(-time.Hour)); cleared != nil {
		t.Fatal("late consent applied")
	}
	p, _ = s.Get(ctx, k)
	if slices.Contains(p.Consents, "account_email") {
		t.Fatal("late consent re-added a withdrawn scope")
	}
}

func TestPurgeSparesUserWhoLinkedAgain(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	unlinkedAt := time.Now().Add(-time.Hour)
	if _, err := s.SetLinked(ctx, k, false, unlinkedAt); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetLinked(ctx, k, true, unlinkedAt.Add(30*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if still, _ := s.StillUnlinked(ctx, k, unlinkedAt); still {
		t.Fatal("StillUnlinked after re-link")
	}
	if purged, err := s.Purge(ctx, k, &unlinkedAt); err != nil || purged {
		t.Fatalf("purged=%v err=%v, want spared", purged, err)
	}
	other := Key{Issuer: k.Issuer, UserID: "2"}
	if _, err := s.SetLinked(ctx, other, false, unlinkedAt); err != nil {
		t.Fatal(err)
	}
	if purged, _ := s.Purge(ctx, other, &unlinkedAt); !purged {
		t.Fatal("unlinked user not purged")
	}
	if _, err := s.Get(ctx, other); err != ErrNotFound {
		t.Fatalf("after purge: %v", err)
	}
}

func TestReauthOnlyMovesForward(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	t1 := time.Now().Truncate(time.Millisecond)
	s.RequireReauth(ctx, k, t1)
	if ok, _ := s.RequireReauth(ctx, k, t1.Add(-time.Minute)); ok {
		t.Fatal("older reauth moved the mark back")
	}
	p, _ := s.Get(ctx, k)
	if !p.ReauthRequiredAt.Time.Equal(t1) {
		t.Fatalf("reauth at %v want %v", p.ReauthRequiredAt.Time, t1)
	}
}
