package statusapi

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/setflow/setflow/audit"
	"github.com/setflow/setflow/identity"
	"github.com/setflow/setflow/internal/testenv"
	"github.com/setflow/setflow/userstate"
	"github.com/setflow/setflow/userstate/statedb"
)

const iss = "https://kauth.kakao.com"

func get(t *testing.T, h http.Handler, path, token string, into any) int {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if into != nil && rec.Code == http.StatusOK {
		if err := json.Unmarshal(rec.Body.Bytes(), into); err != nil {
			t.Fatal(err)
		}
	}
	return rec.Code
}

// The status API answers from the per-user state: a hijacked account is
// locked with its sessions invalid up to the lock; lookups by account id go
// through the service's mapping table; unknown users are known=false.
func TestStatusFromThePerUserState(t *testing.T) {
	db, _ := testenv.Database(t)
	store := statedb.NewStore(db)
	hasher := audit.SubjectHasher{Key: []byte("k")}
	ctx := context.Background()
	at := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	apply := func(user, key string, c userstate.Change) {
		sub := userstate.Subject{Hash: hasher.Hash(iss, user), Issuer: iss, UserID: user}
		if _, err := store.Apply(ctx, sub, key, func(s userstate.State) (userstate.State, userstate.Decision) {
			return userstate.Apply(s, c)
		}); err != nil {
			t.Fatal(err)
		}
	}
	yes := true
	apply("1001", "e1", userstate.Change{Time: at, Now: at, Link: &yes, Consents: map[string]bool{"account_email": true}})
	apply("1001", "e2", userstate.Change{Time: at.Add(time.Hour), Now: at, Lock: &yes})
	apply("1001", "e3", userstate.Change{Time: at.Add(2 * time.Hour), Now: at, Reauth: true})

	db.MustExec(`CREATE TABLE social_accounts (provider text, provider_user_id text, account_id text)`)
	db.MustExec(`INSERT INTO social_accounts VALUES ('kakao', '1001', 'acct-7'), ('kakao', '3003', 'acct-7')`)
	m, err := identity.NewTable(db, identity.TableSchema{Table: "social_accounts", UserColumn: "provider_user_id", AccountColumn: "account_id", Filter: "provider=kakao"})
	if err != nil {
		t.Fatal(err)
	}
	reader, err := statedb.NewReader(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	h := (&Server{States: reader, Subjects: hasher, Accounts: m, Issuer: iss, Tokens: []string{"old", "new"}}).Handler()

	var sub Subject
	if code := get(t, h, "/v1/subjects/1001", "new", &sub); code != http.StatusOK {
		t.Fatalf("status %d", code)
	}
	if !sub.Known || sub.Linked == nil || !*sub.Linked || !sub.Locked || !sub.LockedSince.Equal(at.Add(time.Hour)) ||
		!sub.ReauthRequiredSince.Equal(at.Add(2*time.Hour)) || !sub.SessionsValidAfter.Equal(endOfSecond(at.Add(2*time.Hour))) ||
		sub.Consents["account_email"] != userstate.Granted || sub.Purge.State != PurgeNone || sub.Version != 3 {
		t.Fatalf("subject: %+v", sub)
	}
	var unknown Subject
	if code := get(t, h, "/v1/subjects/2002?issuer=other", "old", &unknown); code != http.StatusOK || unknown.Known || unknown.Locked || unknown.Issuer != "other" {
		t.Fatalf("unknown: %d %+v", code, unknown)
	}
	var acct Account
	if code := get(t, h, "/v1/accounts/acct-7", "old", &acct); code != http.StatusOK {
		t.Fatalf("account status %d", code)
	}
	if len(acct.Subjects) != 2 || !acct.Locked || !acct.SessionsValidAfter.Equal(endOfSecond(at.Add(2*time.Hour))) || acct.Subjects[1].Known {
		t.Fatalf("account: %+v", acct)
	}
	var none Account
	if code := get(t, h, "/v1/accounts/nobody", "old", &none); code != http.StatusOK || len(none.Subjects) != 0 || none.Locked {
		t.Fatalf("account without Kakao users: %d %+v", code, none)
	}
	for _, c := range []struct {
		path, token string
		want        int
	}{
		{"/v1/subjects/1001", "", http.StatusUnauthorized},
		{"/v1/subjects/1001", "wrong", http.StatusUnauthorized},
		{"/v1/subjects/%01x", "new", http.StatusBadRequest},
		{"/v1/other", "new", http.StatusNotFound},
	} {
		if code := get(t, h, c.path, c.token, nil); code != c.want {
			t.Errorf("%s with %q: %d, want %d", c.path, c.token, code, c.want)
		}
	}
	db.Close()
	if code := get(t, h, "/v1/subjects/1001", "new", nil); code != http.StatusServiceUnavailable {
		t.Fatalf("database down: %d, want 503", code)
	}
}

// endOfSecond is the last microsecond of t's second: a time in whole seconds
// (a SET's) covers sessions created anywhere in its second.
func endOfSecond(t time.Time) time.Time { return t.Add(time.Second - time.Microsecond) }

// A login path compares its session's creation time with
// sessions_valid_after: a session created later in a whole-second event's
// second may predate the event and must end; a fractional time (the unlink
// webhook's receipt time) is given as it is.
func TestViewSessionsValidAfterCoversAWholeSecond(t *testing.T) {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	locked := View(iss, "u", userstate.State{Lock: userstate.Register{Value: userstate.Locked, At: at}}, true)
	if session := at.Add(500 * time.Millisecond); locked.SessionsValidAfter == nil || session.After(*locked.SessionsValidAfter) {
		t.Fatalf("locked at %s: sessions_valid_after %v keeps a session created at %s", at, locked.SessionsValidAfter, session)
	}
	if next := at.Add(time.Second); !next.After(*locked.SessionsValidAfter) {
		t.Fatalf("locked at %s: sessions_valid_after %v ends a session of the next second", at, locked.SessionsValidAfter)
	}
	received := at.Add(250 * time.Millisecond)
	unlinked := View(iss, "u", userstate.State{Link: userstate.Register{Value: userstate.Unlinked, At: received}}, true)
	if unlinked.SessionsValidAfter == nil || !unlinked.SessionsValidAfter.Equal(received) {
		t.Fatalf("unlinked at %s: sessions_valid_after %v, want the time as it is", received, unlinked.SessionsValidAfter)
	}
}

func TestViewPurgeStates(t *testing.T) {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	pending := View(iss, "u", userstate.State{Link: userstate.Register{Value: userstate.Unlinked, At: at},
		Purge: &userstate.PendingPurge{Cutoff: at, Due: at.Add(time.Hour)}}, true)
	if pending.Purge.State != PurgePending || !pending.Purge.Due.Equal(at.Add(time.Hour)) || !pending.SessionsValidAfter.Equal(endOfSecond(at)) {
		t.Fatalf("pending: %+v", pending)
	}
	purged := View(iss, "u", userstate.State{Link: userstate.Register{Value: userstate.Unlinked, At: at},
		Tombstone: &userstate.Tombstone{Cutoff: at, At: at.Add(time.Hour)}}, true)
	if purged.Purge.State != PurgePurged {
		t.Fatalf("purged: %+v", purged)
	}
	relinked := View(iss, "u", userstate.State{Link: userstate.Register{Value: userstate.Linked, At: at.Add(2 * time.Hour)},
		Tombstone: &userstate.Tombstone{Cutoff: at, At: at.Add(time.Hour)}}, true)
	if relinked.Purge.State != PurgeNone || relinked.SessionsValidAfter != nil {
		t.Fatalf("linked again after the purge: %+v", relinked)
	}
}
