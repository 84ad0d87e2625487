package serviceusers

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/setflow/setflow/internal/testenv"
)

func TestWriterSetsTheServicesColumns(t *testing.T) {
	db, _ := testenv.Database(t)
	db.MustExec(`CREATE SCHEMA shop`)
	db.MustExec(`CREATE TABLE shop.users (id bigint PRIMARY KEY, name text, locked boolean NOT NULL DEFAULT false, reauth_at timestamptz, unlinked_at timestamptz)`)
	db.MustExec(`INSERT INTO shop.users (id, name) VALUES (1, 'a'), (2, 'b')`)
	w, err := NewWriter(db, Schema{Table: "shop.users", IDColumn: "id", LockedColumn: "locked", ReauthColumn: "reauth_at", UnlinkedColumn: "unlinked_at"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	at := time.Date(2026, 2, 3, 4, 5, 6, 0, time.UTC)
	if n, err := w.Write(ctx, nil, "1", Flags{Locked: true, ReauthSince: at}); err != nil || n != 1 {
		t.Fatalf("write: %d %v", n, err)
	}
	if n, err := w.Write(ctx, nil, "1", Flags{Locked: true, ReauthSince: at}); err != nil || n != 0 {
		t.Fatalf("same state again changed %d rows (%v)", n, err)
	}
	var row struct {
		Locked   bool       `db:"locked"`
		Reauth   *time.Time `db:"reauth_at"`
		Unlinked *time.Time `db:"unlinked_at"`
	}
	if err := db.Get(&row, `SELECT locked, reauth_at, unlinked_at FROM shop.users WHERE id = 1`); err != nil {
		t.Fatal(err)
	}
	if !row.Locked || row.Reauth == nil || !row.Reauth.Equal(at) || row.Unlinked != nil {
		t.Fatalf("row: %+v", row)
	}
	if _, err := w.Write(ctx, nil, "1", Flags{}); err != nil {
		t.Fatal(err)
	}
	_ = db.Get(&row, `SELECT locked, reauth_at, unlinked_at FROM shop.users WHERE id = 1`)
	if row.Locked || row.Reauth != nil {
		t.Fatalf("unlock did not clear: %+v", row)
	}
	var other bool
	_ = db.Get(&other, `SELECT locked FROM shop.users WHERE id = 2`)
	if other {
		t.Fatal("another account was written")
	}
	bad, _ := NewWriter(db, Schema{Table: "shop.users", IDColumn: "id", LockedColumn: "missing"})
	if _, err := bad.Write(ctx, nil, "1", Flags{}); !errors.Is(err, ErrSchema) {
		t.Fatalf("missing column: %v, want ErrSchema", err)
	}
}

func TestSchemaValidation(t *testing.T) {
	for _, s := range []Schema{
		{Table: "users", IDColumn: "id"},
		{Table: "users;x", IDColumn: "id", LockedColumn: "l"},
		{Table: "users", IDColumn: "i d", LockedColumn: "l"},
		{Table: "users", IDColumn: "id", ReauthColumn: "r\""},
	} {
		if err := s.Validate(); err == nil {
			t.Errorf("%+v accepted", s)
		}
	}
}
