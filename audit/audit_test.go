package audit

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/setflow/setflow/internal/testenv"
)

func seed(t *testing.T) (*Postgres, func(string)) {
	db, _ := testenv.Database(t)
	p := NewPostgres(db)
	ctx := context.Background()
	h := SubjectHasher{Key: []byte("k")}
	for i, step := range []string{"received", "revoke_sessions", "lock_account"} {
		ins, err := p.Append(ctx, Record{EventKey: "set:1", EventType: "t", SubjectHash: h.Hash("iss", "42"),
			Step: step, Outcome: "done", Detail: map[string]any{"n": i, "note": "<ok>"}})
		if err != nil || !ins {
			t.Fatalf("append %s: %v %v", step, ins, err)
		}
	}
	exec := func(q string) {
		t.Helper()
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	return p, exec
}

func TestAppendIsWriteOncePerStep(t *testing.T) {
	p, _ := seed(t)
	ins, err := p.Append(context.Background(), Record{EventKey: "set:1", Step: "received", Outcome: "other"})
	if err != nil || ins {
		t.Fatalf("second append inserted=%v err=%v", ins, err)
	}
	recs, _ := p.ForEvent(context.Background(), "set:1")
	if len(recs) != 3 || recs[0].Outcome != "done" {
		t.Fatalf("records %+v", recs)
	}
	if res, err := p.Verify(context.Background()); err != nil || res.Rows != 3 {
		t.Fatalf("verify: %+v %v", res, err)
	}
}

func TestVerifyDetectsEditedRow(t *testing.T) {
	p, exec := seed(t)
	exec(`ALTER TABLE setflow_audit DISABLE TRIGGER setflow_audit_append_only`)
	exec(`UPDATE setflow_audit SET outcome = 'skipped' WHERE step = 'revoke_sessions'`)
	_, err := p.Verify(context.Background())
	if !errors.Is(err, ErrTampered) || !strings.Contains(err.Error(), "edited") {
		t.Fatalf("verify after edit: %v", err)
	}
}

func TestVerifyDetectsDeletedRow(t *testing.T) {
	p, exec := seed(t)
	exec(`DELETE FROM setflow_audit WHERE step = 'revoke_sessions'`)
	_, err := p.Verify(context.Background())
	if !errors.Is(err, ErrTampered) || !strings.Contains(err.Error(), "deleted") {
		t.Fatalf("verify after delete: %v", err)
	}
}

func TestUpdatesAreRefused(t *testing.T) {
	db, _ := testenv.Database(t)
	p := NewPostgres(db)
	if _, err := p.Append(context.Background(), Record{EventKey: "k", Step: "s", Outcome: "done"}); err != nil {
		t.Fatal(err)
	}
	_, err := db.Exec(`UPDATE setflow_audit SET outcome = 'x'`)
	if err == nil || !strings.Contains(err.Error(), "append-only") {
		t.Fatalf("update: %v, want refused", err)
	}
}

func TestSubjectHashIsKeyed(t *testing.T) {
	a := SubjectHasher{Key: []byte("a")}.Hash("iss", "42")
	b := SubjectHasher{Key: []byte("b")}.Hash("iss", "42")
	if a == b || strings.Contains(a, "42") || len(a) != 32 {
		t.Fatalf("hashes %q %q", a, b)
	}
	if (SubjectHasher{}).Hash("iss", "") != "" {
		t.Fatal("no user must give no hash")
	}
}
