package auditdb

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/setflow/setflow/audit"
	"github.com/setflow/setflow/internal/testenv"
)

var testHasher = audit.SubjectHasher{Key: []byte("k")}

// seed writes three rows for user 42, two for user 43 and two for an event
// that names no user (a shard chain).
func seed(t *testing.T) (*Store, func(string)) {
	t.Helper()
	db, _ := testenv.Database(t)
	p := NewStore(db)
	ctx := context.Background()
	for i, step := range []string{"received", "revoke_sessions", "lock_account"} {
		ins, err := p.Append(ctx, audit.Record{EventKey: "set:1", EventType: "t", SubjectHash: testHasher.Hash("iss", "42"),
			Step: step, Outcome: "done", Detail: map[string]any{"n": i, "note": "<ok>"}})
		if err != nil || !ins {
			t.Fatalf("append %s: %v %v", step, ins, err)
		}
	}
	for _, r := range []audit.Record{
		{EventKey: "set:2", SubjectHash: testHasher.Hash("iss", "43"), Step: "received", Outcome: "done"},
		{EventKey: "set:2", SubjectHash: testHasher.Hash("iss", "43"), Step: "lock_account", Outcome: "done"},
		{EventKey: "share:1", Step: "received", Outcome: "done"},
		{EventKey: "share:1", Step: "completed", Outcome: "done"},
	} {
		if ins, err := p.Append(ctx, r); err != nil || !ins {
			t.Fatalf("append %+v: %v %v", r, ins, err)
		}
	}
	return p, execer(t, db)
}

func execer(t *testing.T, db *sqlx.DB) func(string) {
	return func(q string) {
		t.Helper()
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
}

func checkpoint(t *testing.T, p *Store) audit.Checkpoint {
	t.Helper()
	cp, _, err := p.Checkpoint(context.Background())
	if err != nil {
		t.Fatalf("checkpoint: %v", err)
	}
	return cp
}

func wantTampered(t *testing.T, err error, words ...string) {
	t.Helper()
	if !errors.Is(err, audit.ErrTampered) {
		t.Fatalf("got %v, want %v", err, audit.ErrTampered)
	}
	for _, w := range words {
		if !strings.Contains(err.Error(), w) {
			t.Fatalf("error %q does not say %q", err, w)
		}
	}
}

func TestAppendIsWriteOncePerStep(t *testing.T) {
	p, _ := seed(t)
	ins, err := p.Append(context.Background(), audit.Record{EventKey: "set:1", SubjectHash: testHasher.Hash("iss", "42"), Step: "received", Outcome: "other"})
	if err != nil || ins {
		t.Fatalf("second append inserted=%v err=%v", ins, err)
	}
	recs, _ := p.ForEvent(context.Background(), "set:1")
	if len(recs) != 3 || recs[0].Outcome != "done" {
		t.Fatalf("records %+v", recs)
	}
	if res, err := p.Verify(context.Background()); err != nil || res.Rows != 7 || res.Chains != 3 || res.Unsealed != 7 {
		t.Fatalf("verify: %+v %v", res, err)
	}
}

func TestRowsFormOneChainPerUser(t *testing.T) {
	p, _ := seed(t)
	ctx := context.Background()
	recs, _ := p.ForEvent(ctx, "set:1")
	for i, r := range recs {
		if r.Chain != audit.UserChain(testHasher.Hash("iss", "42")) || r.Seq != int64(i+1) {
			t.Fatalf("row %d: chain %s seq %d", i, r.Chain, r.Seq)
		}
	}
	if recs[0].PrevHash != "" || recs[1].PrevHash != recs[0].Hash {
		t.Fatalf("links %+v", recs)
	}
	other, _ := p.ForEvent(ctx, "set:2")
	if other[0].Seq != 1 || other[0].PrevHash != "" {
		t.Fatalf("user 43's chain starts at %d, prev %q", other[0].Seq, other[0].PrevHash)
	}
	share, _ := p.ForEvent(ctx, "share:1")
	if !strings.HasPrefix(share[0].Chain, "shard:") || share[0].Chain != audit.ChainFor("", "share:1") {
		t.Fatalf("an event with no user goes to a shard chain, got %q", share[0].Chain)
	}
}

// Appends racing for the same chain (two workers running one user's steps, or
// two events of one shard) all land, in one unbroken chain.
func TestConcurrentAppendsToOneChainStayChained(t *testing.T) {
	db, _ := testenv.Database(t)
	p := NewStore(db)
	ctx := context.Background()
	user := testHasher.Hash("iss", "7")
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 8; i++ {
				for _, subject := range []string{user, ""} {
					ins, err := p.Append(ctx, audit.Record{EventKey: fmt.Sprintf("e%d-%d", g, i), SubjectHash: subject, Step: "s" + subject, Outcome: "done"})
					if err != nil || !ins {
						errs <- fmt.Errorf("append: %v %v", ins, err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	res, err := p.Verify(ctx)
	if err != nil || res.Rows != 128 {
		t.Fatalf("verify: %+v %v", res, err)
	}
	var n int64
	if err := db.Get(&n, `SELECT max(seq) FROM setflow_audit WHERE chain = $1`, audit.UserChain(user)); err != nil || n != 64 {
		t.Fatalf("user chain ends at %d (%v), want 64", n, err)
	}
}

func TestVerifyDetectsEditedRow(t *testing.T) {
	p, exec := seed(t)
	exec(`ALTER TABLE setflow_audit DISABLE TRIGGER setflow_audit_append_only`)
	exec(`UPDATE setflow_audit SET outcome = 'skipped' WHERE step = 'revoke_sessions'`)
	_, err := p.Verify(context.Background())
	wantTampered(t, err, "edited")
}

func TestVerifyDetectsEditedRowInAnotherUsersChain(t *testing.T) {
	p, exec := seed(t)
	ctx := context.Background()
	checkpoint(t, p)
	exec(`ALTER TABLE setflow_audit DISABLE TRIGGER setflow_audit_append_only`)
	exec(`UPDATE setflow_audit SET detail = '{"revoked": 0}' WHERE event_key = 'set:2' AND step = 'received'`)
	_, err := p.Verify(ctx)
	wantTampered(t, err, "edited")
	_, err = p.VerifyChain(ctx, audit.UserChain(testHasher.Hash("iss", "43")), audit.VerifyOptions{})
	wantTampered(t, err, "edited")
	if _, err := p.VerifyChain(ctx, audit.UserChain(testHasher.Hash("iss", "42")), audit.VerifyOptions{}); err != nil {
		t.Fatalf("user 42's chain is intact: %v", err)
	}
}

func TestVerifyDetectsDeletedRow(t *testing.T) {
	p, exec := seed(t)
	exec(`DELETE FROM setflow_audit WHERE step = 'revoke_sessions'`)
	_, err := p.Verify(context.Background())
	wantTampered(t, err, "deleted")
}

// A row deleted and the rows after it renumbered and relinked would need
// every later hash recomputed: the seq is hashed, so renumbering shows.
func TestVerifyDetectsReorderedRows(t *testing.T) {
	p, exec := seed(t)
	exec(`ALTER TABLE setflow_audit DISABLE TRIGGER setflow_audit_append_only`)
	// Swap rows 1 and 2 of user 42's chain.
	exec(`UPDATE setflow_audit SET seq = -seq WHERE event_key = 'set:1' AND seq IN (1, 2)`)
	exec(`UPDATE setflow_audit SET seq = 3 + seq WHERE event_key = 'set:1' AND seq IN (-1, -2)`)
	_, err := p.Verify(context.Background())
	wantTampered(t, err, "re-ordered")
	// Swapping the order of the ids (the insertion order) changes nothing:
	// a chain's order is its seq, which its hashes cover.
}

func TestVerifyDetectsDeletedChain(t *testing.T) {
	p, exec := seed(t)
	ctx := context.Background()
	checkpoint(t, p)
	exec(`DELETE FROM setflow_audit WHERE event_key = 'set:2'`)
	_, err := p.Verify(ctx)
	wantTampered(t, err, "chain was deleted")
	_, err = p.VerifyChain(ctx, audit.UserChain(testHasher.Hash("iss", "43")), audit.VerifyOptions{})
	wantTampered(t, err, "chain was deleted")
	// The checkpointer refuses to seal over it.
	if _, err := p.Append(ctx, audit.Record{EventKey: "set:3", SubjectHash: testHasher.Hash("iss", "44"), Step: "received", Outcome: "done"}); err != nil {
		t.Fatal(err)
	}
	_, _, err = p.Checkpoint(ctx)
	wantTampered(t, err, "chain was deleted")
}

func TestVerifyAgainstPublishedCheckpointDetectsTruncation(t *testing.T) {
	p, exec := seed(t)
	ctx := context.Background()
	cp := checkpoint(t, p)
	anchor := cp.Anchor()
	res, err := p.VerifyWith(ctx, audit.VerifyOptions{Expect: &anchor})
	if err != nil || res.Checkpoint == nil || res.Checkpoint.ID != 1 || res.Unsealed != 0 {
		t.Fatalf("intact chains against their checkpoint: %+v %v", res, err)
	}
	// Rows cut off the end of a sealed chain show against the checkpoint's leaves.
	exec(`DELETE FROM setflow_audit WHERE step = 'lock_account' AND event_key = 'set:1'`)
	_, err = p.Verify(ctx)
	wantTampered(t, err, "cut off")
	// Hiding it by deleting the checkpoint too leaves a valid-looking trail;
	// only the published checkpoint shows it.
	exec(`DELETE FROM setflow_audit_checkpoint_leaves`)
	exec(`DELETE FROM setflow_audit_checkpoints`)
	if _, err := p.Verify(ctx); err != nil {
		t.Fatalf("truncated chains without checkpoints still link (that is why checkpoints are published): %v", err)
	}
	_, err = p.VerifyWith(ctx, audit.VerifyOptions{Expect: &anchor})
	wantTampered(t, err, "missing")
	_, err = p.VerifyChain(ctx, audit.UserChain(testHasher.Hash("iss", "42")), audit.VerifyOptions{Expect: &anchor})
	wantTampered(t, err, "missing")
}

// Rewriting the checkpoints after cutting rows off: the rewritten checkpoint
// no longer has the published hash.
func TestVerifyDetectsRewrittenCheckpoints(t *testing.T) {
	p, exec := seed(t)
	ctx := context.Background()
	anchor := checkpoint(t, p).Anchor()
	exec(`DELETE FROM setflow_audit WHERE event_key = 'set:2'`)
	exec(`DELETE FROM setflow_audit_checkpoint_leaves`)
	exec(`DELETE FROM setflow_audit_checkpoints`)
	forged := checkpoint(t, p)
	if forged.ID != anchor.ID || forged.Hash == anchor.Hash {
		t.Fatalf("forged %+v vs %+v", forged, anchor)
	}
	_, err := p.VerifyWith(ctx, audit.VerifyOptions{Expect: &anchor})
	wantTampered(t, err, "differs from the published one")
	// An edited checkpoint row, or an edited leaf, shows without -expect.
	exec(`ALTER TABLE setflow_audit_checkpoint_leaves DISABLE TRIGGER setflow_audit_checkpoint_leaves_append_only`)
	exec(`UPDATE setflow_audit_checkpoint_leaves SET seq = seq + 1 WHERE chain LIKE 'shard:%'`)
	_, err = p.Verify(ctx)
	wantTampered(t, err, "do not match its root")
}

func TestCheckpointsChainAndOnlyWhenSomethingMoved(t *testing.T) {
	p, _ := seed(t)
	ctx := context.Background()
	first := checkpoint(t, p)
	if first.ID != 1 || first.PrevHash != "" || first.Chains != 3 {
		t.Fatalf("first checkpoint %+v", first)
	}
	if cp, written, err := p.Checkpoint(ctx); err != nil || written || cp.ID != 1 {
		t.Fatalf("nothing moved: %+v %v %v", cp, written, err)
	}
	if _, err := p.Append(ctx, audit.Record{EventKey: "set:9", SubjectHash: testHasher.Hash("iss", "42"), Step: "x", Outcome: "done"}); err != nil {
		t.Fatal(err)
	}
	second := checkpoint(t, p)
	if second.ID != 2 || second.PrevHash != first.Hash || second.Chains != 3 {
		t.Fatalf("second checkpoint %+v", second)
	}
	var leaves int
	if err := p.db.Get(&leaves, `SELECT count(*) FROM setflow_audit_checkpoint_leaves WHERE checkpoint_id = 2`); err != nil || leaves != 1 {
		t.Fatalf("checkpoint 2 records %d leaves (%v), want only the chain that moved", leaves, err)
	}
	res, err := p.VerifyWith(ctx, audit.VerifyOptions{Expect: &audit.Anchor{ID: 1, Hash: first.Hash}})
	if err != nil || res.Checkpoint.ID != 2 {
		t.Fatalf("verify: %+v %v", res, err)
	}
}

func TestVerifyChainUsesOnlyTheChainAndItsProof(t *testing.T) {
	p, _ := seed(t)
	ctx := context.Background()
	cp := checkpoint(t, p)
	chain := audit.UserChain(testHasher.Hash("iss", "42"))
	res, err := p.VerifyChain(ctx, chain, audit.VerifyOptions{})
	if err != nil || res.Rows != 3 || res.Sealed == nil || res.Sealed.Seq != 3 || res.Checkpoint.ID != cp.ID {
		t.Fatalf("verify chain: %+v %v", res, err)
	}
	if !audit.VerifyProof(*res.Sealed, *res.Proof, cp.Root) {
		t.Fatal("the proof does not verify on its own")
	}
	forged := *res.Sealed
	forged.Seq = 2
	if audit.VerifyProof(forged, *res.Proof, cp.Root) {
		t.Fatal("a forged leaf verifies")
	}
	// A chain written after the checkpoint is unsealed, not broken.
	if _, err := p.Append(ctx, audit.Record{EventKey: "set:5", SubjectHash: testHasher.Hash("iss", "55"), Step: "received", Outcome: "done"}); err != nil {
		t.Fatal(err)
	}
	res, err = p.VerifyChain(ctx, audit.UserChain(testHasher.Hash("iss", "55")), audit.VerifyOptions{})
	if err != nil || res.Rows != 1 || res.Sealed != nil {
		t.Fatalf("unsealed chain: %+v %v", res, err)
	}
}

// A purged user's audit names the user only by keyed hash and verifies with
// that hash alone: no user id, no audit key, no personal data.
func TestPurgedUsersAuditVerifiesWithoutPersonalData(t *testing.T) {
	db, _ := testenv.Database(t)
	p := NewStore(db)
	ctx := context.Background()
	const userID = "4815162342"
	subject := audit.SubjectHasher{Key: []byte("secret-key")}.Hash("https://kauth.kakao.com", userID)
	for _, r := range []audit.Record{
		{EventKey: "unlink:1", EventType: "user-unlinked", Step: "user-unlinked/received", Outcome: "done"},
		{EventKey: "unlink:1", EventType: "setflow:purge", Step: "purge/run", Outcome: "done", Detail: map[string]any{"cutoff": "2026-11-01T00:00:00Z", "kakao_check": "unlinked"}},
		{EventKey: "unlink:1", EventType: "setflow:purge", Step: "purge/sessions", Outcome: "done", Detail: map[string]any{"deleted": 2}},
	} {
		r.SubjectHash = subject
		if _, err := p.Append(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	checkpoint(t, p)
	var dump string
	if err := db.Get(&dump, `SELECT string_agg(t::text, ' ') FROM setflow_audit t`); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(dump, userID) {
		t.Fatalf("the audit holds the user id: %s", dump)
	}
	res, err := NewStore(db).VerifyChain(ctx, audit.UserChain(subject), audit.VerifyOptions{})
	if err != nil || res.Rows != 3 || res.Sealed == nil {
		t.Fatalf("verify purged user's chain by its hash: %+v %v", res, err)
	}
}

func TestUpdatesAreRefused(t *testing.T) {
	db, _ := testenv.Database(t)
	p := NewStore(db)
	if _, err := p.Append(context.Background(), audit.Record{EventKey: "k", Step: "s", Outcome: "done"}); err != nil {
		t.Fatal(err)
	}
	checkpoint(t, p)
	for _, q := range []string{`UPDATE setflow_audit SET outcome = 'x'`, `UPDATE setflow_audit_checkpoints SET root = 'x'`,
		`UPDATE setflow_audit_checkpoint_leaves SET hash = 'x'`} {
		if _, err := db.Exec(q); err == nil || !strings.Contains(err.Error(), "append-only") {
			t.Fatalf("%s: %v, want refused", q, err)
		}
	}
}

func TestVerifyFromCheckpointAfterArchiving(t *testing.T) {
	p, exec := seed(t)
	ctx := context.Background()
	cp := checkpoint(t, p)
	for _, step := range []string{"a", "b"} {
		if _, err := p.Append(ctx, audit.Record{EventKey: "set:7", SubjectHash: testHasher.Hash("iss", "42"), Step: step, Outcome: "done"}); err != nil {
			t.Fatal(err)
		}
	}
	// Archive (delete) every row the checkpoint sealed; verification resumes from it.
	exec(`DELETE FROM setflow_audit WHERE event_key <> 'set:7'`)
	if _, err := p.Verify(ctx); !errors.Is(err, audit.ErrTampered) {
		t.Fatalf("from the start, archived rows must show: %v", err)
	}
	from := cp.Anchor()
	res, err := p.VerifyWith(ctx, audit.VerifyOptions{From: &from})
	if err != nil || res.Rows != 2 {
		t.Fatalf("from checkpoint: %+v %v", res, err)
	}
	if _, err := p.VerifyWith(ctx, audit.VerifyOptions{From: &audit.Anchor{ID: cp.ID, Hash: strings.Repeat("0", 64)}}); !errors.Is(err, audit.ErrTampered) {
		t.Fatalf("a wrong checkpoint hash must fail: %v", err)
	}
}

// An append stuck before its commit holds up only its own chain: another
// user's append goes through, the same user's next append waits for it.
func TestAppendsOfDifferentUsersDoNotWaitOnEachOther(t *testing.T) {
	p, _ := seed(t)
	ctx := context.Background()
	a, b := testHasher.Hash("iss", "42"), testHasher.Hash("iss", "43")
	tx, err := p.db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback() //nolint:errcheck
	if _, err := tx.Exec(`INSERT INTO setflow_audit (event_key, event_type, subject_hash, step, outcome, chain, seq, prev_hash, hash)
		VALUES ('stuck', '', $1, 's', 'done', $2, 4, 'x', 'y')`, a, audit.UserChain(a)); err != nil {
		t.Fatal(err)
	}
	other, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if ins, err := p.Append(other, audit.Record{EventKey: "set:b", SubjectHash: b, Step: "s", Outcome: "done"}); err != nil || !ins {
		t.Fatalf("another user's append waited on the stuck one: %v %v", ins, err)
	}
	if ins, err := p.Append(other, audit.Record{EventKey: "share:b", Step: "s", Outcome: "done"}); err != nil || !ins {
		t.Fatalf("an append with no user waited on the stuck one: %v %v", ins, err)
	}
	same, cancel2 := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel2()
	if _, err := p.Append(same, audit.Record{EventKey: "set:a", SubjectHash: a, Step: "s", Outcome: "done"}); err == nil {
		t.Fatal("the same user's append did not wait for the row before it")
	}
	tx.Rollback() //nolint:errcheck
	if ins, err := p.Append(ctx, audit.Record{EventKey: "set:a", SubjectHash: a, Step: "s", Outcome: "done"}); err != nil || !ins {
		t.Fatalf("append after the stuck one gave up: %v %v", ins, err)
	}
	if _, err := p.Verify(ctx); err != nil {
		t.Fatal(err)
	}
}
