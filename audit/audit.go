// Package audit is setflow's append-only record of what happened to each event:
// one row per event and per reaction step. Rows are hash-chained so that
// tampering is detectable (Verify), and carry a keyed hash of the subject,
// never the user id in clear.
package audit

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
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

// rowHash chains a row to its predecessor.
func rowHash(prev string, r Record, detail []byte) string {
	h := sha256.New()
	for _, part := range []string{prev, r.EventKey, r.EventType, r.SubjectHash, r.Step, r.Outcome,
		string(detail), r.CreatedAt.UTC().Format(time.RFC3339Nano)} {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Postgres is the Log on the setflow_audit table.
type Postgres struct {
	db  *sqlx.DB
	now func() time.Time
}

// NewPostgres returns a Log on db.
func NewPostgres(db *sqlx.DB) *Postgres { return &Postgres{db: db, now: time.Now} }

// chainLock serialises appends: each row needs its predecessor's hash.
const chainLock = 0x5e7f1a

// Append writes the record at the end of the chain.
func (p *Postgres) Append(ctx context.Context, r Record) (bool, error) {
	detail, err := canonicalDetail(r.Detail)
	if err != nil {
		return false, fmt.Errorf("audit: encode detail: %w", err)
	}
	// Postgres keeps microseconds; hash what will be read back.
	r.CreatedAt = p.now().UTC().Truncate(time.Microsecond)
	tx, err := p.db.BeginTxx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("audit: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, chainLock); err != nil {
		return false, fmt.Errorf("audit: lock: %w", err)
	}
	var exists bool
	if err := tx.GetContext(ctx, &exists, `SELECT EXISTS (SELECT 1 FROM setflow_audit WHERE event_key = $1 AND step = $2)`,
		r.EventKey, r.Step); err != nil {
		return false, fmt.Errorf("audit: %w", err)
	}
	if exists {
		return false, nil
	}
	var prev string
	if err := tx.GetContext(ctx, &prev, `SELECT COALESCE((SELECT hash FROM setflow_audit ORDER BY id DESC LIMIT 1), '')`); err != nil {
		return false, fmt.Errorf("audit: %w", err)
	}
	hash := rowHash(prev, r, detail)
	if _, err := tx.ExecContext(ctx, `
		INSERT INTO setflow_audit (event_key, event_type, subject_hash, step, outcome, detail, created_at, prev_hash, hash)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
		r.EventKey, r.EventType, r.SubjectHash, r.Step, r.Outcome, detail, r.CreatedAt, prev, hash); err != nil {
		return false, fmt.Errorf("audit: append: %w", err)
	}
	return true, tx.Commit()
}

const selectRecords = `SELECT id, event_key, event_type, subject_hash, step, outcome, detail, created_at, prev_hash, hash FROM setflow_audit`

func (p *Postgres) query(ctx context.Context, q string, args ...any) ([]Record, error) {
	rows, err := p.db.QueryxContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("audit: list: %w", err)
	}
	defer rows.Close()
	var out []Record
	for rows.Next() {
		var r Record
		var detail []byte
		if err := rows.Scan(&r.ID, &r.EventKey, &r.EventType, &r.SubjectHash, &r.Step, &r.Outcome, &detail,
			&r.CreatedAt, &r.PrevHash, &r.Hash); err != nil {
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
	return p.query(ctx, selectRecords+` WHERE subject_hash = $1 ORDER BY id LIMIT $2`, subjectHash, limit)
}

// ErrTampered reports a broken chain.
var ErrTampered = errors.New("audit chain broken")

// VerifyResult summarises a chain check. LastHash is the anchor to publish
// somewhere setflow cannot write (a ticket, a log archive): a later check
// against it detects rows cut off the end of the chain, which the chain alone
// cannot show.
type VerifyResult struct {
	Rows     int64
	LastID   int64
	LastHash string
}

// Anchor is a row id and hash published earlier.
type Anchor struct {
	ID   int64
	Hash string
}

// VerifyOptions narrow a chain check.
type VerifyOptions struct {
	// From starts at the row after this anchor instead of the first row, for
	// a chain whose old rows were archived and deleted; the anchor row itself
	// must still be there or have been the last row archived (its hash is
	// taken as the link of the next row).
	From *Anchor
	// Expect requires this row to be present with this hash: rows deleted from
	// the end (or the anchor row rewritten) fail the check.
	Expect *Anchor
}

// Verify walks the whole chain in id order and fails at the first row whose
// hash or link does not match: an edited, inserted or deleted row.
func (p *Postgres) Verify(ctx context.Context) (VerifyResult, error) {
	return p.VerifyWith(ctx, VerifyOptions{})
}

// VerifyWith is Verify from an anchor and/or up to an expected anchor.
func (p *Postgres) VerifyWith(ctx context.Context, opts VerifyOptions) (VerifyResult, error) {
	var res VerifyResult
	prev := ""
	after := int64(0)
	if opts.From != nil {
		prev, after = opts.From.Hash, opts.From.ID
	}
	expectSeen := false
	for {
		batch, err := p.query(ctx, selectRecords+` WHERE id > $1 ORDER BY id LIMIT 1000`, after)
		if err != nil {
			return res, err
		}
		if len(batch) == 0 {
			break
		}
		for _, r := range batch {
			if r.PrevHash != prev {
				return res, fmt.Errorf("%w at row %d: it does not link to the row before it (a row was deleted or inserted)", ErrTampered, r.ID)
			}
			detail, err := canonicalDetail(r.Detail)
			if err != nil {
				return res, err
			}
			if got := rowHash(prev, r, detail); got != r.Hash {
				return res, fmt.Errorf("%w at row %d: its content does not match its hash (the row was edited)", ErrTampered, r.ID)
			}
			if opts.Expect != nil && r.ID == opts.Expect.ID {
				if r.Hash != opts.Expect.Hash {
					return res, fmt.Errorf("%w at row %d: its hash differs from the published anchor", ErrTampered, r.ID)
				}
				expectSeen = true
			}
			prev = r.Hash
			res.Rows++
			res.LastID, res.LastHash = r.ID, r.Hash
		}
		after = res.LastID
	}
	if opts.Expect != nil && !expectSeen {
		return res, fmt.Errorf("%w: anchor row %d is missing (rows were deleted from the end of the chain)", ErrTampered, opts.Expect.ID)
	}
	return res, nil
}
