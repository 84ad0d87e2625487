package auditdb

import (
	"context"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/setflow/setflow/audit"
	"github.com/setflow/setflow/internal/testenv"
	"github.com/setflow/setflow/migrations"
)

// writeLegacyChain writes rows the way the single global chain did before
// migration 00009 (schema version 8).
func writeLegacyChain(t *testing.T, db *sqlx.DB, n int) {
	t.Helper()
	prev := ""
	for i := 0; i < n; i++ {
		r := audit.Record{EventKey: "old:" + string(rune('a'+i%3)), Chain: audit.LegacyChain, EventType: "t", SubjectHash: testHasher.Hash("iss", "42"),
			Step: string(rune('a' + i)), Outcome: "done", CreatedAt: time.Now().UTC().Truncate(time.Microsecond)}
		if i%3 == 2 {
			r.SubjectHash = ""
		}
		detail := []byte(`{"n":1}`)
		hash := audit.RowHash(prev, r, detail)
		if _, err := db.Exec(`INSERT INTO setflow_audit (event_key, event_type, subject_hash, step, outcome, detail, created_at, prev_hash, hash)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`, r.EventKey, r.EventType, r.SubjectHash, r.Step, r.Outcome, detail, r.CreatedAt, prev, hash); err != nil {
			t.Fatal(err)
		}
		prev = hash
	}
}

func TestUpgradeSealsTheLegacyChainUnderTheFirstCheckpoint(t *testing.T) {
	db, _ := testenv.DatabaseAt(t, 8)
	ctx := context.Background()
	writeLegacyChain(t, db, 5)
	if err := migrations.Up(ctx, db.DB); err != nil {
		t.Fatal(err)
	}
	p := NewStore(db)
	cp, written, err := p.Seal(ctx)
	if err != nil || !written || cp.ID != 1 || cp.Chains != 1 {
		t.Fatalf("seal: %+v %v %v", cp, written, err)
	}
	if _, written, err := p.Seal(ctx); err != nil || written {
		t.Fatalf("a second seal writes nothing: %v %v", written, err)
	}
	// New rows go to their own chains, next to the sealed legacy chain.
	if _, err := p.Append(ctx, audit.Record{EventKey: "new", SubjectHash: testHasher.Hash("iss", "42"), Step: "received", Outcome: "done"}); err != nil {
		t.Fatal(err)
	}
	checkpoint(t, p)
	res, err := p.VerifyWith(ctx, audit.VerifyOptions{Expect: &audit.Anchor{ID: 1, Hash: cp.Hash}})
	if err != nil || res.Rows != 6 || res.Chains != 2 {
		t.Fatalf("verify after upgrade: %+v %v", res, err)
	}
	leg, err := p.VerifyChain(ctx, audit.LegacyChain, audit.VerifyOptions{})
	if err != nil || leg.Rows != 5 || leg.Sealed == nil || leg.Sealed.Seq != 5 {
		t.Fatalf("legacy chain: %+v %v", leg, err)
	}
	// Sealed legacy rows stay protected: the last one cut off shows.
	execer(t, db)(`DELETE FROM setflow_audit WHERE chain = 'legacy' AND seq = 5`)
	_, err = p.Verify(ctx)
	wantTampered(t, err, "cut off")
}

func TestUpgradeRefusesToSealABrokenLegacyChain(t *testing.T) {
	db, _ := testenv.DatabaseAt(t, 8)
	ctx := context.Background()
	writeLegacyChain(t, db, 4)
	execer(t, db)(`ALTER TABLE setflow_audit DISABLE TRIGGER setflow_audit_append_only`)
	execer(t, db)(`UPDATE setflow_audit SET outcome = 'skipped' WHERE step = 'b'`)
	execer(t, db)(`ALTER TABLE setflow_audit ENABLE TRIGGER setflow_audit_append_only`)
	if err := migrations.Up(ctx, db.DB); err != nil {
		t.Fatal(err)
	}
	_, _, err := NewStore(db).Seal(ctx)
	wantTampered(t, err, "cannot be sealed", "edited")
	var n int
	if err := db.Get(&n, `SELECT count(*) FROM setflow_audit_checkpoints`); err != nil || n != 0 {
		t.Fatalf("%d checkpoints written (%v)", n, err)
	}
}
