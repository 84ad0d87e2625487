package identity

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"

	"github.com/setflow/setflow/internal/testenv"
)

func TestIdentityMapsAUserToItself(t *testing.T) {
	ids, err := Identity{}.Accounts(context.Background(), "iss", "42")
	if err != nil || !reflect.DeepEqual(ids, []string{"42"}) {
		t.Fatalf("accounts %v %v", ids, err)
	}
	users, _ := Identity{}.Users(context.Background(), "42")
	if !reflect.DeepEqual(users, []User{{UserID: "42"}}) {
		t.Fatalf("users %v", users)
	}
}

// A social_accounts table with a provider filter: rows of other providers do
// not map, several accounts all come back, an unknown user has none, and an
// integer account column works.
func TestTableMapsThroughTheServicesSocialAccounts(t *testing.T) {
	db, _ := testenv.Database(t)
	db.MustExec(`CREATE SCHEMA shop`)
	db.MustExec(`CREATE TABLE shop.social_accounts (provider text, provider_user_id text, account_id bigint)`)
	db.MustExec(`INSERT INTO shop.social_accounts VALUES ('kakao', '1001', 7), ('kakao', '1001', 3), ('google', '1001', 9), ('kakao', '2002', 5)`)
	m, err := NewTable(db, TableSchema{Table: "shop.social_accounts", UserColumn: "provider_user_id", AccountColumn: "account_id", Filter: "provider=kakao"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if ids, err := m.Accounts(ctx, "https://kauth.kakao.com", "1001"); err != nil || !reflect.DeepEqual(ids, []string{"3", "7"}) {
		t.Fatalf("accounts of 1001: %v %v", ids, err)
	}
	if ids, err := m.Accounts(ctx, "https://kauth.kakao.com", "404"); err != nil || len(ids) != 0 {
		t.Fatalf("accounts of an unknown user: %v %v", ids, err)
	}
	if users, err := m.Users(ctx, "9"); err != nil || len(users) != 0 {
		t.Fatalf("a google-only account mapped to %v %v", users, err)
	}
	if users, err := m.Users(ctx, "5"); err != nil || !reflect.DeepEqual(users, []User{{UserID: "2002"}}) {
		t.Fatalf("users of 5: %v %v", users, err)
	}
}

func TestTableWithIssuerColumnMapsOnlyThatIssuer(t *testing.T) {
	db, _ := testenv.Database(t)
	db.MustExec(`CREATE TABLE links (iss text, kakao_id text, uid text)`)
	db.MustExec(`INSERT INTO links VALUES ('a', '1', 'x'), ('b', '1', 'y')`)
	m, err := NewTable(db, TableSchema{Table: "links", UserColumn: "kakao_id", AccountColumn: "uid", IssuerColumn: "iss"})
	if err != nil {
		t.Fatal(err)
	}
	if ids, _ := m.Accounts(context.Background(), "b", "1"); !reflect.DeepEqual(ids, []string{"y"}) {
		t.Fatalf("accounts %v", ids)
	}
	if users, _ := m.Users(context.Background(), "x"); !reflect.DeepEqual(users, []User{{Issuer: "a", UserID: "1"}}) {
		t.Fatalf("users %v", users)
	}
}

// A missing table is a configuration error: permanent, not retried forever.
func TestTableMissingIsRejected(t *testing.T) {
	db, _ := testenv.Database(t)
	m, err := NewTable(db, TableSchema{Table: "nope", UserColumn: "a", AccountColumn: "b"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Accounts(context.Background(), "", "1"); !errors.Is(err, ErrRejected) {
		t.Fatalf("got %v, want ErrRejected", err)
	}
}

func TestTableSchemaValidationRefusesInjection(t *testing.T) {
	for _, s := range []TableSchema{
		{Table: "x; DROP TABLE y", UserColumn: "a", AccountColumn: "b"},
		{Table: "x", UserColumn: "a\"", AccountColumn: "b"},
		{Table: "x", UserColumn: "a", AccountColumn: ""},
		{Table: "x", UserColumn: "a", AccountColumn: "b", Filter: "provider"},
		{Table: "x", UserColumn: "a", AccountColumn: "b", Filter: "p or 1=1 --=x"},
		{Table: "x", UserColumn: "a", AccountColumn: "b", IssuerColumn: "i-s"},
	} {
		if err := s.Validate(); err == nil {
			t.Errorf("schema %+v accepted", s)
		}
	}
}

func TestHTTPLookup(t *testing.T) {
	var status int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if status != 0 {
			w.WriteHeader(status)
			return
		}
		q := r.URL.Query()
		switch {
		case q.Get("kakao_user_id") == "1" && q.Get("issuer") == "iss" && q.Get("tenant") == "t1":
			_, _ = w.Write([]byte(`{"account_ids":["b","a"]}`))
		case q.Get("account_id") == "a":
			_, _ = w.Write([]byte(`{"kakao_users":[{"issuer":"iss","user_id":"1"}]}`))
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	defer srv.Close()
	h := &HTTPLookup{URL: srv.URL + "/lookup?tenant=t1", Token: "tok"}
	ctx := context.Background()
	if ids, err := h.Accounts(ctx, "iss", "1"); err != nil || !reflect.DeepEqual(ids, []string{"a", "b"}) {
		t.Fatalf("accounts %v %v", ids, err)
	}
	if ids, err := h.Accounts(ctx, "iss", "2"); err != nil || len(ids) != 0 {
		t.Fatalf("unknown user: %v %v", ids, err)
	}
	if users, err := h.Users(ctx, "a"); err != nil || !reflect.DeepEqual(users, []User{{Issuer: "iss", UserID: "1"}}) {
		t.Fatalf("users %v %v", users, err)
	}
	status = http.StatusServiceUnavailable
	if _, err := h.Accounts(ctx, "iss", "1"); err == nil || errors.Is(err, ErrRejected) {
		t.Fatalf("503: %v, want a retryable error", err)
	}
	status = 0
	h.Token = "wrong"
	if _, err := h.Accounts(ctx, "iss", "1"); !errors.Is(err, ErrRejected) {
		t.Fatalf("401: %v, want ErrRejected", err)
	}
}
