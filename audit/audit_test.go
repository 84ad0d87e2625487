package audit

import (
	"context"
	"errors"
	"fmt"
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

func TestVerifyAgainstPublishedAnchorDetectsTruncation(t *testing.T) {
	p, exec := seed(t)
	ctx := context.Background()
	res, err := p.Verify(ctx)
	if err != nil || res.LastHash == "" {
		t.Fatalf("verify: %+v %v", res, err)
	}
	anchor := &Anchor{ID: res.LastID, Hash: res.LastHash}
	if _, err := p.VerifyWith(ctx, VerifyOptions{Expect: anchor}); err != nil {
		t.Fatalf("intact chain against its anchor: %v", err)
	}
	// Deleting the newest row leaves a valid-looking chain; only the anchor shows it.
	exec(`DELETE FROM setflow_audit WHERE step = 'lock_account'`)
	if _, err := p.Verify(ctx); err != nil {
		t.Fatalf("a truncated chain still links (that is why anchors exist): %v", err)
	}
	_, err = p.VerifyWith(ctx, VerifyOptions{Expect: anchor})
	if !errors.Is(err, ErrTampered) || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("truncation against anchor: %v", err)
	}
}

func TestVerifyFromAnchorAfterArchiving(t *testing.T) {
	p, exec := seed(t)
	ctx := context.Background()
	recs, _ := p.ForEvent(ctx, "set:1")
	// Archive (delete) the first row; verification resumes from its anchor.
	exec(`DELETE FROM setflow_audit WHERE id = ` + fmt.Sprint(recs[0].ID))
	if _, err := p.Verify(ctx); !errors.Is(err, ErrTampered) {
		t.Fatalf("from the start, a deleted first row must show: %v", err)
	}
	res, err := p.VerifyWith(ctx, VerifyOptions{From: &Anchor{ID: recs[0].ID, Hash: recs[0].Hash}})
	if err != nil || res.Rows != 2 {
		t.Fatalf("from anchor: %+v %v", res, err)
	}
	if _, err := p.VerifyWith(ctx, VerifyOptions{From: &Anchor{ID: recs[0].ID, Hash: "forged"}}); !errors.Is(err, ErrTampered) {
		t.Fatalf("a wrong anchor hash must fail: %v", err)
	}
}
