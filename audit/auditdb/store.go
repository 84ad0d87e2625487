// Package auditdb keeps the audit chains of package audit in PostgreSQL
// (setflow_audit and its checkpoint tables, which refuse updates): Append
// adds a row at the end of its chain in one statement, Checkpoint seals the
// heads of all chains, and Verify, VerifyChain and ProveChain check them.
package auditdb

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/setflow/setflow/audit"
)

// Store is the audit.Log on the setflow_audit table.
type Store struct {
	db  *sqlx.DB
	now func() time.Time

	prepare sync.Once
	append  *sql.Stmt // appendRow prepared; nil: prepare failed, plain Exec
}

var _ audit.Log = (*Store)(nil)

// NewStore returns the audit.Log on db.
func NewStore(db *sqlx.DB) *Store { return &Store{db: db, now: time.Now} }

// maxAppendAttempts bounds the retries of an append that keeps losing its
// chain's next seq to concurrent appends of the same chain.
const maxAppendAttempts = 100

// appendRow inserts a row as the successor of its chain's head in one
// statement: the head is read, the row numbered and hashed (RowHash) and
// inserted, and the statement commits alone, so an append costs what a bare
// insert costs. $9 is the content hash.
const appendRow = `
	INSERT INTO setflow_audit (event_key, event_type, subject_hash, step, outcome, detail, created_at, chain, seq, prev_hash, hash)
	SELECT $1, $2, $3, $4, $5, $6, $7, $8, h.seq + 1, h.hash,
	       encode(sha256(convert_to('` + audit.RowHashPrefix + `|' || $8 || '|' || (h.seq + 1)::text || '|' || h.hash || '|' || $9, 'UTF8')), 'hex')
	FROM (SELECT seq, hash FROM (SELECT seq, hash FROM setflow_audit WHERE chain = $8 ORDER BY seq DESC LIMIT 1) last
	      UNION ALL SELECT 0, '' ORDER BY seq DESC LIMIT 1) h
	ON CONFLICT (event_key, step) DO NOTHING`

// Append writes the record at the end of its chain, in one statement that
// reads the chain's head and inserts the row after it (appendRow). If a
// concurrent append of the same chain took that seq first, the unique
// (chain, seq) key refuses the insert and Append tries again on the new
// head. Appends to different chains never wait on each other.
func (p *Store) Append(ctx context.Context, r audit.Record) (bool, error) {
	detail, err := audit.CanonicalDetail(r.Detail)
	if err != nil {
		return false, fmt.Errorf("audit: encode detail: %w", err)
	}
	// Postgres keeps microseconds; hash what will be read back.
	r.CreatedAt = p.now().UTC().Truncate(time.Microsecond)
	r.Chain = audit.ChainFor(r.SubjectHash, r.EventKey)
	content := audit.ContentHash(r, detail)
	// Prepared once per connection: the statement is planned once, and an
	// append is one round trip like any single-row insert.
	p.prepare.Do(func() { p.append, _ = p.db.PrepareContext(context.WithoutCancel(ctx), appendRow) })
	exec := func() (sql.Result, error) {
		args := []any{r.EventKey, r.EventType, r.SubjectHash, r.Step, r.Outcome, detail, r.CreatedAt, r.Chain, content}
		if p.append != nil {
			return p.append.ExecContext(ctx, args...)
		}
		return p.db.ExecContext(ctx, appendRow, args...)
	}
	for attempt := 0; attempt < maxAppendAttempts; attempt++ {
		res, err := exec()
		var pqErr *pq.Error
		if errors.As(err, &pqErr) && pqErr.Code == "23505" && pqErr.Constraint == "setflow_audit_chain_seq_key" {
			continue // another append took this seq: try on the new head
		}
		if err != nil {
			return false, fmt.Errorf("audit: append: %w", err)
		}
		n, err := res.RowsAffected()
		return n == 1, err
	}
	return false, fmt.Errorf("audit: append: chain %s: lost the race for its next row %d times", r.Chain, maxAppendAttempts)
}

const selectRecords = `SELECT id, event_key, event_type, subject_hash, step, outcome, detail, created_at, prev_hash, hash, chain, seq FROM setflow_audit`

func (p *Store) query(ctx context.Context, q string, args ...any) ([]audit.Record, error) {
	return queryRecords(ctx, p.db, q, args...)
}

func queryRecords(ctx context.Context, db sqlx.QueryerContext, q string, args ...any) ([]audit.Record, error) {
	rows, err := db.QueryxContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("audit: list: %w", err)
	}
	defer rows.Close()
	var out []audit.Record
	for rows.Next() {
		var r audit.Record
		var detail []byte
		if err := rows.Scan(&r.ID, &r.EventKey, &r.EventType, &r.SubjectHash, &r.Step, &r.Outcome, &detail,
			&r.CreatedAt, &r.PrevHash, &r.Hash, &r.Chain, &r.Seq); err != nil {
			return nil, err
		}
		if err := json.Unmarshal(detail, &r.Detail); err != nil {
			return nil, fmt.Errorf("audit: decode detail: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// ForEvent lists an event's records in the order they were written.
func (p *Store) ForEvent(ctx context.Context, eventKey string) ([]audit.Record, error) {
	return p.query(ctx, selectRecords+` WHERE event_key = $1 ORDER BY id`, eventKey)
}

// ForSubject lists a user's records (by subject hash), oldest first.
func (p *Store) ForSubject(ctx context.Context, subjectHash string, limit int) ([]audit.Record, error) {
	return p.query(ctx, selectRecords+` WHERE chain = $3 OR (chain = '`+audit.LegacyChain+`' AND subject_hash = $1) ORDER BY id LIMIT $2`,
		subjectHash, limit, audit.UserChain(subjectHash))
}
