package sessions

import (
	"context"
	"testing"
	"time"

	"github.com/setflow/setflow/internal/testenv"
)

// The revoker works on a service's own schema with other table and column names.
func TestPostgresRevokeOnCustomSchema(t *testing.T) {
	db, _ := testenv.Database(t)
	db.MustExec(`CREATE SCHEMA auth`)
	db.MustExec(`CREATE TABLE auth.logins (sid text PRIMARY KEY, kakao_id text, started timestamptz, ended timestamptz)`)
	now := time.Now()
	db.MustExec(`INSERT INTO auth.logins VALUES ('a', 'u', $1, NULL), ('b', 'u', $2, NULL), ('c', 'v', $1, NULL)`,
		now.Add(-time.Hour), now.Add(time.Hour))
	r, err := NewPostgres(db, Schema{Table: "auth.logins", UserID: "kakao_id", CreatedAt: "started", RevokedAt: "ended"})
	if err != nil {
		t.Fatal(err)
	}
	n, err := r.Revoke(context.Background(), "u", now)
	if err != nil || n != 1 {
		t.Fatalf("revoked %d %v, want 1", n, err)
	}
	var ended []string
	db.Select(&ended, `SELECT sid FROM auth.logins WHERE ended IS NOT NULL`)
	if len(ended) != 1 || ended[0] != "a" {
		t.Fatalf("ended %v, want [a]", ended)
	}
	if n, _ := r.Revoke(context.Background(), "u", now); n != 0 {
		t.Fatalf("second revoke %d, want 0", n)
	}
}

func TestSchemaValidationRefusesInjection(t *testing.T) {
	for _, s := range []Schema{
		{Table: "sessions; DROP TABLE x", UserID: "u", CreatedAt: "c", RevokedAt: "r"},
		{Table: "a.b.c", UserID: "u", CreatedAt: "c", RevokedAt: "r"},
		{Table: "s", UserID: "u\"", CreatedAt: "c", RevokedAt: "r"},
		{Table: "s", UserID: "u", CreatedAt: "", RevokedAt: "r"},
	} {
		if err := s.Validate(); err == nil {
			t.Errorf("schema %+v accepted", s)
		}
	}
	if err := DefaultSchema().Validate(); err != nil {
		t.Fatal(err)
	}
}
