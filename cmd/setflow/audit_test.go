package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/setflow/setflow/audit"
	"github.com/setflow/setflow/audit/auditdb"
	"github.com/setflow/setflow/internal/testenv"
)

// captureStdout runs f and returns what it printed.
func captureStdout(t *testing.T, f func() error) (string, error) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stdout
	os.Stdout = w
	done := make(chan string)
	go func() {
		b, _ := io.ReadAll(r)
		done <- string(b)
	}()
	ferr := f()
	os.Stdout = old
	w.Close()
	return <-done, ferr
}

var anchorRE = regexp.MustCompile(`-expect (\d+:[0-9a-f]{64})`)

func TestAuditCheckpointAndVerifyOneUser(t *testing.T) {
	db, url := testenv.Database(t)
	ctx := context.Background()
	t.Setenv("SETFLOW_AUDIT_KEY", "test-audit-key")
	h := audit.SubjectHasher{Key: []byte("test-audit-key")}
	log := auditdb.NewStore(db)
	for _, user := range []string{"42", "43"} {
		for _, step := range []string{"a/received", "a/revoke_sessions"} {
			if _, err := log.Append(ctx, audit.Record{EventKey: "k" + user, SubjectHash: h.Hash("https://kauth.kakao.com", user), Step: step, Outcome: "done"}); err != nil {
				t.Fatal(err)
			}
		}
	}
	out, err := captureStdout(t, func() error { return runAudit(ctx, []string{"checkpoint", "-database-url", url}) })
	m := anchorRE.FindStringSubmatch(out)
	if err != nil || m == nil {
		t.Fatalf("checkpoint: %v\n%s", err, out)
	}
	anchor := m[1]
	out, err = captureStdout(t, func() error {
		return runAudit(ctx, []string{"verify", "-database-url", url, "-expect", anchor})
	})
	if err != nil || !strings.Contains(out, "4 rows in 2 chains") || !strings.Contains(out, anchor) {
		t.Fatalf("verify -expect: %v\n%s", err, out)
	}
	out, err = captureStdout(t, func() error { return runAudit(ctx, []string{"verify", "-database-url", url, "--user", "42"}) })
	if err != nil || !strings.Contains(out, "2 rows") || !strings.Contains(out, "sealed at row 2 by checkpoint "+anchor) ||
		!strings.Contains(out, " of 2, path ") {
		t.Fatalf("verify --user: %v\n%s", err, out)
	}
	subject := h.Hash("https://kauth.kakao.com", "43")
	out, err = captureStdout(t, func() error {
		return runAudit(ctx, []string{"verify", "-database-url", url, "-subject", subject, "-expect", anchor})
	})
	if err != nil || !strings.Contains(out, "chain user:"+subject+" intact") {
		t.Fatalf("verify -subject: %v\n%s", err, out)
	}
	// User 43's last row cut off, and the checkpoint that sealed it deleted.
	db.MustExec(`DELETE FROM setflow_audit WHERE event_key = 'k43' AND step = 'a/revoke_sessions'`)
	db.MustExec(`DELETE FROM setflow_audit_checkpoint_leaves`)
	db.MustExec(`DELETE FROM setflow_audit_checkpoints`)
	if _, err := captureStdout(t, func() error { return runAudit(ctx, []string{"verify", "-database-url", url}) }); err != nil {
		t.Fatalf("without the published checkpoint the cut is invisible: %v", err)
	}
	for _, args := range [][]string{{"-expect", anchor}, {"-user", "43", "-expect", anchor}} {
		_, err = captureStdout(t, func() error { return runAudit(ctx, append([]string{"verify", "-database-url", url}, args...)) })
		if err == nil || !strings.Contains(err.Error(), "audit chain broken") || !strings.Contains(err.Error(), "missing") {
			t.Fatalf("verify %v after truncation: %v", args, err)
		}
	}
}

// legacyRow writes a row as releases before migration 00009 did: one global
// chain, each row hashing its predecessor's hash and its content.
func legacyRows(t *testing.T, db *sqlx.DB, steps ...string) {
	prev := ""
	for _, step := range steps {
		at := time.Now().UTC().Truncate(time.Microsecond)
		sum := sha256.New()
		for _, part := range []string{prev, "old", "t", "", step, "done", "{}", at.Format(time.RFC3339Nano)} {
			sum.Write([]byte(part))
			sum.Write([]byte{0})
		}
		hash := hex.EncodeToString(sum.Sum(nil))
		db.MustExec(`INSERT INTO setflow_audit (event_key, event_type, subject_hash, step, outcome, detail, created_at, prev_hash, hash)
			VALUES ('old', 't', '', $1, 'done', '{}', $2, $3, $4)`, step, at, prev, hash)
		prev = hash
	}
}

func TestMigrateSealsTheExistingAuditChain(t *testing.T) {
	ctx := context.Background()
	db, url := testenv.DatabaseAt(t, 8)
	legacyRows(t, db, "a", "b", "c")
	if err := runMigrate(ctx, []string{"-database-url", url}); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	var cps int
	if err := db.Get(&cps, `SELECT count(*) FROM setflow_audit_checkpoints`); err != nil || cps != 1 {
		t.Fatalf("%d checkpoints after migrate (%v), want the first one sealing the old chain", cps, err)
	}
	out, err := captureStdout(t, func() error { return runAudit(ctx, []string{"verify", "-database-url", url}) })
	if err != nil || !strings.Contains(out, "3 rows in 1 chains, 0 written since") {
		t.Fatalf("verify after migrate: %v\n%s", err, out)
	}
	if err := runMigrate(ctx, []string{"-database-url", url}); err != nil {
		t.Fatalf("a second migrate: %v", err)
	}

	broken, burl := testenv.DatabaseAt(t, 8)
	legacyRows(t, broken, "a", "b", "c")
	broken.MustExec(`DELETE FROM setflow_audit WHERE step = 'b'`)
	err = runMigrate(ctx, []string{"-database-url", burl})
	if err == nil || !strings.Contains(err.Error(), "cannot be sealed") || !strings.Contains(err.Error(), "deleted") {
		t.Fatalf("migrate over a broken chain: %v", err)
	}
}
