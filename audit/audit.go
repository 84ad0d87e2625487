// Package audit is setflow's append-only record of what happened to each event:
// one row per event and per reaction step. Rows carry a keyed hash of the
// subject, never the user id in clear, and are hash-chained per chain: each
// user's rows form their own chain ("user:<subject hash>"), rows that name no
// user go to one of ShardChains shard chains by event key. Appends to
// different chains share no lock and no row. Periodic checkpoints (Checkpoint)
// commit to the heads of all chains with a Merkle root and are themselves
// hash-chained, so that Verify detects edited, deleted or re-ordered rows,
// deleted chains and, against a published checkpoint, rows cut off the end.
package audit

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// Record is one audit row.
type Record struct {
	ID          int64          `json:"id,omitempty"`
	EventKey    string         `json:"event_key"`
	EventType   string         `json:"event_type"`
	SubjectHash string         `json:"subject_hash"`
	Step        string         `json:"step"`
	Outcome     string         `json:"outcome"`
	Detail      map[string]any `json:"detail,omitempty"`
	CreatedAt   time.Time      `json:"created_at"`
	PrevHash    string         `json:"prev_hash,omitempty"`
	Hash        string         `json:"hash,omitempty"`
	// Chain and Seq place the row: set by Append (ChainFor), ignored on input.
	Chain string `json:"chain,omitempty"`
	Seq   int64  `json:"seq,omitempty"`
}

// Log appends records.
type Log interface {
	// Append writes the record once: a second Append for the same event key and
	// step is a no-op reporting inserted=false, so retries never duplicate rows.
	Append(ctx context.Context, r Record) (inserted bool, err error)
	// ForEvent lists an event's records in the order they were written.
	ForEvent(ctx context.Context, eventKey string) ([]Record, error)
}

// SubjectHasher turns a user into an audit handle. Kakao user ids are short
// numbers, so a plain hash could be reversed by enumeration: the hash is keyed.
type SubjectHasher struct{ Key []byte }

// Hash returns the keyed handle of (issuer, user id); "" for no user.
func (h SubjectHasher) Hash(issuer, userID string) string {
	if userID == "" {
		return ""
	}
	m := hmac.New(sha256.New, h.Key)
	m.Write([]byte(issuer))
	m.Write([]byte{0})
	m.Write([]byte(userID))
	return hex.EncodeToString(m.Sum(nil)[:16])
}

// ShardChains is the number of chains that hold the rows naming no user (Talk
// Share, SSF stream events). A chain per event would add a checkpoint leaf per
// event forever; one chain would be a single hot row again. 64 shards keep the
// checkpoint small and make two such appends meet on one chain head rarely
// (and then one simply retries).
const ShardChains = 64

// LegacyChain holds the rows written before per-chain audit (migration
// 00009), in their original order and with their original hashes.
const LegacyChain = "legacy"

// ChainFor names the chain a row belongs to: the user's, or a shard by event key.
func ChainFor(subjectHash, eventKey string) string {
	if subjectHash != "" {
		return UserChain(subjectHash)
	}
	s := sha256.Sum256([]byte(eventKey))
	return fmt.Sprintf("shard:%02d", int(s[0])%ShardChains)
}

// UserChain is the chain of a user's rows, by subject hash.
func UserChain(subjectHash string) string { return "user:" + subjectHash }

// canonicalDetail renders detail the way it reads back from jsonb (sorted keys,
// numbers as float64), so that the hash computed now verifies later.
func canonicalDetail(d map[string]any) ([]byte, error) {
	if d == nil {
		d = map[string]any{}
	}
	b, err := json.Marshal(d)
	if err != nil {
		return nil, err
	}
	var back map[string]any
	if err := json.Unmarshal(b, &back); err != nil {
		return nil, err
	}
	return json.Marshal(back)
}

func hashParts(parts ...string) string {
	h := sha256.New()
	for _, part := range parts {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// legacyRowHash is the hash of a row of the single pre-00009 chain.
func legacyRowHash(prev string, r Record, detail []byte) string {
	return hashParts(prev, r.EventKey, r.EventType, r.SubjectHash, r.Step, r.Outcome,
		string(detail), r.CreatedAt.UTC().Format(time.RFC3339Nano))
}

// contentHash covers what a row says. Nothing in it needs personal data: the
// subject is its keyed hash.
func contentHash(r Record, detail []byte) string {
	return hashParts(r.EventKey, r.EventType, r.SubjectHash, r.Step, r.Outcome,
		string(detail), r.CreatedAt.UTC().Format(time.RFC3339Nano))
}

// rowHashPrefix versions the per-chain row hash.
const rowHashPrefix = "setflow-audit-v2"

// rowHash chains a row to its predecessor in its chain: the SHA-256, in hex,
// of "setflow-audit-v2|<chain>|<seq>|<prev hash>|<content hash>". Chain and
// seq are hashed too, so a row moved to another place (re-ordered, or into
// another chain) no longer matches. Append has PostgreSQL compute the same
// expression (appendRow), because only the insert knows seq and prev hash;
// the fields are hex, decimal and chain names, so "|" cannot be forged.
func rowHash(prev string, r Record, detail []byte) string {
	if r.Chain == LegacyChain {
		return legacyRowHash(prev, r, detail)
	}
	s := sha256.Sum256([]byte(rowHashPrefix + "|" + r.Chain + "|" + strconv.FormatInt(r.Seq, 10) + "|" + prev + "|" + contentHash(r, detail)))
	return hex.EncodeToString(s[:])
}

// Postgres is the Log on the setflow_audit table.
type Postgres struct {
	db  *sqlx.DB
	now func() time.Time

	prepare sync.Once
	append  *sql.Stmt // appendRow prepared; nil: prepare failed, plain Exec
}

// NewPostgres returns a Log on db.
func NewPostgres(db *sqlx.DB) *Postgres { return &Postgres{db: db, now: time.Now} }

// maxAppendAttempts bounds the retries of an append that keeps losing its
// chain's next seq to concurrent appends of the same chain.
const maxAppendAttempts = 100

// appendRow inserts a row as the successor of its chain's head in one
// statement: the head is read, the row numbered and hashed (rowHash) and
// inserted, and the statement commits alone, so an append costs what a bare
// insert costs. $9 is the content hash.
const appendRow = `
	INSERT INTO setflow_audit (event_key, event_type, subject_hash, step, outcome, detail, created_at, chain, seq, prev_hash, hash)
	SELECT $1, $2, $3, $4, $5, $6, $7, $8, h.seq + 1, h.hash,
	       encode(sha256(convert_to('` + rowHashPrefix + `|' || $8 || '|' || (h.seq + 1)::text || '|' || h.hash || '|' || $9, 'UTF8')), 'hex')
	FROM (SELECT seq, hash FROM (SELECT seq, hash FROM setflow_audit WHERE chain = $8 ORDER BY seq DESC LIMIT 1) last
	      UNION ALL SELECT 0, '' ORDER BY seq DESC LIMIT 1) h
	ON CONFLICT (event_key, step) DO NOTHING`

// Append writes the record at the end of its chain, in one statement that
// reads the chain's head and inserts the row after it (appendRow). If a
// concurrent append of the same chain took that seq first, the unique
// (chain, seq) key refuses the insert and Append tries again on the new
// head. Appends to different chains never wait on each other.
func (p *Postgres) Append(ctx context.Context, r Record) (bool, error) {
	detail, err := canonicalDetail(r.Detail)
	if err != nil {
		return false, fmt.Errorf("audit: encode detail: %w", err)
	}
	// Postgres keeps microseconds; hash what will be read back.
	r.CreatedAt = p.now().UTC().Truncate(time.Microsecond)
	r.Chain = ChainFor(r.SubjectHash, r.EventKey)
	content := contentHash(r, detail)
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

func (p *Postgres) query(ctx context.Context, q string, args ...any) ([]Record, error) {
	return queryRecords(ctx, p.db, q, args...)
}

func queryRecords(ctx context.Context, db sqlx.QueryerContext, q string, args ...any) ([]Record, error) {
	rows, err := db.QueryxContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("audit: list: %w", err)
	}
	defer rows.Close()
	var out []Record
	for rows.Next() {
		var r Record
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
func (p *Postgres) ForEvent(ctx context.Context, eventKey string) ([]Record, error) {
	return p.query(ctx, selectRecords+` WHERE event_key = $1 ORDER BY id`, eventKey)
}

// ForSubject lists a user's records (by subject hash), oldest first.
func (p *Postgres) ForSubject(ctx context.Context, subjectHash string, limit int) ([]Record, error) {
	return p.query(ctx, selectRecords+` WHERE chain = $3 OR (chain = '`+LegacyChain+`' AND subject_hash = $1) ORDER BY id LIMIT $2`,
		subjectHash, limit, UserChain(subjectHash))
}
