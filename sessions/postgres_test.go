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
	if err := db.Select(&ended, `SELECT sid FROM auth.logins WHERE ended IS NOT NULL`); err != nil {
		t.Fatal(err)
	}
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

// Purge deletes the user's rows up to the cut-off, revoked or not, and keeps
// the sessions created after it and other users' sessions.
func TestPostgresPurgeKeepsSessionsCreatedAfterCutoff(t *testing.T) {
	db, _ := testenv.Database(t)
	cutoff := time.Now().Add(-time.Minute)
	db.MustExec(`INSERT INTO sessions (id, user_id, created_at, revoked_at) VALUES
		('old', 'u', $1, NULL), ('old-revoked', 'u', $1, $2), ('at', 'u', $2, NULL),
		('new', 'u', $3, NULL), ('other', 'v', $1, NULL)`,
		cutoff.Add(-time.Hour), cutoff, cutoff.Add(time.Second))
	p, err := NewPostgres(db, DefaultSchema())
	if err != nil {
		t.Fatal(err)
	}
	n, err := p.Purge(context.Background(), "u", cutoff)
	if err != nil || n != 3 {
		t.Fatalf("purged %d %v, want 3", n, err)
	}
	var left []string
	if err := db.Select(&left, `SELECT id FROM sessions ORDER BY id`); err != nil {
		t.Fatal(err)
	}
	if len(left) != 2 || left[0] != "new" || left[1] != "other" {
		t.Fatalf("left %v, want [new other]", left)
	}
	if n, err := p.Purge(context.Background(), "u", cutoff); err != nil || n != 0 {
		t.Fatalf("second purge %d %v, want 0", n, err)
	}
}

func TestPostgresPurgeOnCustomSchema(t *testing.T) {
	db, _ := testenv.Database(t)
	db.MustExec(`CREATE SCHEMA auth`)
	db.MustExec(`CREATE TABLE auth.logins (sid text PRIMARY KEY, kakao_id text, started timestamptz, ended timestamptz)`)
	now := time.Now()
	db.MustExec(`INSERT INTO auth.logins VALUES ('a', 'u', $1, NULL), ('b', 'u', $2, NULL)`, now.Add(-time.Hour), now.Add(time.Hour))
	p, err := NewPostgres(db, Schema{Table: "auth.logins", UserID: "kakao_id", CreatedAt: "started", RevokedAt: "ended"})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := p.Purge(context.Background(), "u", now); err != nil || n != 1 {
		t.Fatalf("purged %d %v, want 1", n, err)
	}
	var left []string
	if err := db.Select(&left, `SELECT sid FROM auth.logins`); err != nil {
		t.Fatal(err)
	}
	if len(left) != 1 || left[0] != "b" {
		t.Fatalf("left %v, want [b]", left)
	}
}
