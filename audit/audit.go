// Package audit is setflow's append-only record of what happened to each event:
// one row per event and per reaction step. Rows carry a hash of the subject,
// never the user id in clear.
package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
)

// Record is one audit row.
type Record struct {
	EventKey    string         `json:"event_key" db:"event_key"`
	EventType   string         `json:"event_type" db:"event_type"`
	SubjectHash string         `json:"subject_hash" db:"subject_hash"`
	Step        string         `json:"step" db:"step"`
	Outcome     string         `json:"outcome" db:"outcome"`
	Detail      map[string]any `json:"detail,omitempty" db:"-"`
	CreatedAt   time.Time      `json:"created_at" db:"created_at"`
}

// Log appends records.
type Log interface {
	// Append writes the record once: a second Append for the same event key and
	// step is a no-op reporting inserted=false, so retries never duplicate rows.
	Append(ctx context.Context, r Record) (inserted bool, err error)
	// ForEvent lists an event's records in the order they were written.
	ForEvent(ctx context.Context, eventKey string) ([]Record, error)
}

// Postgres is the Log on the setflow_audit table.
type Postgres struct{ db *sqlx.DB }

// NewPostgres returns a Log on db.
func NewPostgres(db *sqlx.DB) *Postgres { return &Postgres{db: db} }

func (p *Postgres) Append(ctx context.Context, r Record) (bool, error) {
	detail, err := json.Marshal(r.Detail)
	if err != nil {
		return false, fmt.Errorf("audit: encode detail: %w", err)
	}
	if r.Detail == nil {
		detail = []byte("{}")
	}
	res, err := p.db.ExecContext(ctx, `
		INSERT INTO setflow_audit (event_key, event_type, subject_hash, step, outcome, detail)
		VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (event_key, step) DO NOTHING`,
		r.EventKey, r.EventType, r.SubjectHash, r.Step, r.Outcome, detail)
	if err != nil {
		return false, fmt.Errorf("audit: append: %w", err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

func (p *Postgres) ForEvent(ctx context.Context, eventKey string) ([]Record, error) {
	rows, err := p.db.QueryxContext(ctx, `
		SELECT event_key, event_type, subject_hash, step, outcome, detail, created_at
		FROM setflow_audit WHERE event_key = $1 ORDER BY id`, eventKey)
	if err != nil {
		return nil, fmt.Errorf("audit: list: %w", err)
	}
	defer rows.Close()
	var out []Record
	for rows.Next() {
		var r Record
		var detail []byte
		if err := rows.Scan(&r.EventKey, &r.EventType, &r.SubjectHash, &r.Step, &r.Outcome, &detail, &r.CreatedAt); err != nil {
			return nil, err
		}
		if err := json.Unmarshal(detail, &r.Detail); err != nil {
			return nil, fmt.Errorf("audit: decode detail: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}
