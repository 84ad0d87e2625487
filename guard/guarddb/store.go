// Package guarddb is the blast-radius guard (package guard) on setflow's
// PostgreSQL database.
package guarddb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/setflow/setflow/guard"
)

// Store is the guard on setflow's database (tables setflow_guard_admissions
// and setflow_holds). The hot path inserts rows with distinct keys and counts
// an index range: work for different users never waits on one row or lock.
// The count is not serialised, so a burst of concurrent admissions can pass
// the limit by the number of admissions in flight: a guard against storms,
// not an exact quota.
type Store struct {
	db    *sqlx.DB
	limit guard.Limit
	now   func() time.Time
}

var _ guard.Guard = (*Store)(nil)

// NewStore returns the guard with the given limit (Max 0: off, every
// event is admitted and nothing is recorded).
func NewStore(db *sqlx.DB, limit guard.Limit) *Store {
	if limit.Window <= 0 {
		limit.Window = time.Minute
	}
	return &Store{db: db, limit: limit, now: time.Now}
}

// Limit is the configured rate.
func (p *Store) Limit() guard.Limit { return p.limit }

// Admit implements guard.Guard. The common case — an event admitted now, or seen
// before — costs two round trips: one read of everything the decision needs
// (a hold of this event, an admission of it, a pending hold, the window's
// count) and the insert of the admission.
func (p *Store) Admit(ctx context.Context, req guard.Request) (guard.Verdict, error) {
	var seen struct {
		holdRow
		Admitted bool `db:"admitted"`
		Pending  bool `db:"pending"`
		Used     int  `db:"used"`
	}
	if err := p.db.GetContext(ctx, &seen, `SELECT h.reason, h.decision, h.decided_by, h.note,
		EXISTS (SELECT 1 FROM setflow_guard_admissions WHERE event_key = $1) AS admitted,
		EXISTS (SELECT 1 FROM setflow_holds WHERE decision IS NULL) AS pending,
		(SELECT coalesce(sum(steps), 0) FROM setflow_guard_admissions WHERE admitted_at > $2) AS used
		FROM (SELECT 1) AS one LEFT JOIN setflow_holds h ON h.event_key = $1`,
		req.EventKey, p.now().Add(-p.limit.Window)); err != nil {
		return guard.Verdict{}, fmt.Errorf("guard: %w", err)
	}
	if v, ok := seen.verdict(); ok {
		return v, nil
	}
	if p.limit.Max <= 0 || seen.Admitted {
		return guard.Verdict{Decision: guard.Admitted}, nil
	}
	n := len(req.Steps)
	if n == 0 {
		n = 1
	}
	reason := ""
	switch {
	case seen.Pending:
		reason = "earlier destructive work is held: the guard holds everything until operators decide"
	case seen.Used+n > p.limit.Max:
		reason = fmt.Sprintf("%d destructive steps in the last %s (limit %d)", seen.Used+n, p.limit.Window, p.limit.Max)
	}
	if reason == "" {
		if _, err := p.db.ExecContext(ctx, `INSERT INTO setflow_guard_admissions (event_key, steps, admitted_at)
			VALUES ($1, $2, $3) ON CONFLICT (event_key) DO NOTHING`, req.EventKey, n, p.now()); err != nil {
			return guard.Verdict{}, fmt.Errorf("guard: %w", err)
		}
		return guard.Verdict{Decision: guard.Admitted}, nil
	}
	if _, err := p.db.ExecContext(ctx, `INSERT INTO setflow_holds
		(event_key, subject_hash, event_name, steps, workflow_id, reason, held_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (event_key) DO NOTHING`,
		req.EventKey, req.SubjectHash, req.EventName, pq.Array(req.Steps), req.WorkflowID, reason, p.now()); err != nil {
		return guard.Verdict{}, fmt.Errorf("guard: %w", err)
	}
	// Read back: a concurrent call or an operator may have got there first.
	v, _, err := p.held(ctx, req.EventKey)
	return v, err
}

// holdRow is an event's hold as read from setflow_holds; Reason is NULL when
// the event has none (Admit's outer join).
type holdRow struct {
	Reason   sql.NullString `db:"reason"`
	Decision sql.NullString `db:"decision"`
	By       sql.NullString `db:"decided_by"`
	Note     sql.NullString `db:"note"`
}

// verdict is the hold's verdict: held until operators decide, then their
// decision; false when there is no hold.
func (h holdRow) verdict() (guard.Verdict, bool) {
	switch {
	case !h.Reason.Valid:
		return guard.Verdict{}, false
	case !h.Decision.Valid:
		return guard.Verdict{Decision: guard.Held, Reason: h.Reason.String}, true
	}
	return guard.Verdict{Decision: guard.Decision(h.Decision.String), Reason: h.Reason.String, By: h.By.String, Note: h.Note.String}, true
}

// held returns the hold of an event, if it has one.
func (p *Store) held(ctx context.Context, key string) (guard.Verdict, bool, error) {
	var h holdRow
	err := p.db.GetContext(ctx, &h, `SELECT reason, decision, decided_by, note FROM setflow_holds WHERE event_key = $1`, key)
	if errors.Is(err, sql.ErrNoRows) {
		return guard.Verdict{}, false, nil
	}
	if err != nil {
		return guard.Verdict{}, false, fmt.Errorf("guard: %w", err)
	}
	v, ok := h.verdict()
	return v, ok, nil
}

const holdColumns = `event_key, subject_hash, event_name, steps, workflow_id, reason, held_at, decision, decided_by, decided_at, note`

func where(f guard.Filter) (string, []any) {
	var conds []string
	var args []any
	add := func(cond string, v any) {
		args = append(args, v)
		conds = append(conds, fmt.Sprintf(cond, len(args)))
	}
	if f.EventKey != "" {
		add("event_key = $%d", f.EventKey)
	}
	if f.EventName != "" {
		add("event_name = $%d", f.EventName)
	}
	if f.Subject != "" {
		add("subject_hash = $%d", f.Subject)
	}
	if !f.Since.IsZero() {
		add("held_at >= $%d", f.Since)
	}
	if f.Pending {
		conds = append(conds, "decision IS NULL")
	}
	if len(conds) == 0 {
		return "", nil
	}
	return " WHERE " + strings.Join(conds, " AND "), args
}

func scanHolds(rows *sqlx.Rows) ([]guard.Hold, error) {
	defer rows.Close()
	var out []guard.Hold
	for rows.Next() {
		var h guard.Hold
		var steps pq.StringArray
		if err := rows.Scan(&h.EventKey, &h.SubjectHash, &h.EventName, &steps, &h.WorkflowID, &h.Reason,
			&h.HeldAt, &h.Decision, &h.DecidedBy, &h.DecidedAt, &h.Note); err != nil {
			return nil, err
		}
		h.Steps = steps
		out = append(out, h)
	}
	return out, rows.Err()
}

// List implements guard.Guard: holds oldest first.
func (p *Store) List(ctx context.Context, f guard.Filter) ([]guard.Hold, error) {
	w, args := where(f)
	q := `SELECT ` + holdColumns + ` FROM setflow_holds` + w + ` ORDER BY held_at, event_key`
	if f.Limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	rows, err := p.db.QueryxContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("guard: %w", err)
	}
	return scanHolds(rows)
}

// Decide implements guard.Guard.
func (p *Store) Decide(ctx context.Context, f guard.Filter, d guard.Decision, by, note string) ([]guard.Hold, error) {
	if d != guard.Approved && d != guard.Rejected {
		return nil, guard.ErrBadDecision
	}
	if strings.TrimSpace(by) == "" {
		return nil, errors.New("guard: a decision names who made it")
	}
	f.Pending = true
	w, args := where(f)
	n := len(args)
	args = append(args, string(d), by, p.now(), nullIfEmpty(note))
	q := fmt.Sprintf(`UPDATE setflow_holds SET decision = $%d, decided_by = $%d, decided_at = $%d, note = $%d%s RETURNING %s`,
		n+1, n+2, n+3, n+4, w, holdColumns)
	rows, err := p.db.QueryxContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("guard: %w", err)
	}
	return scanHolds(rows)
}

func nullIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// Pending implements guard.Guard.
func (p *Store) Pending(ctx context.Context) (int, error) {
	var n int
	err := p.db.GetContext(ctx, &n, `SELECT count(*) FROM setflow_holds WHERE decision IS NULL`)
	return n, err
}

// Prune drops admissions older than keep (they only matter within the window).
func (p *Store) Prune(ctx context.Context, keep time.Duration) (int64, error) {
	if keep < p.limit.Window {
		keep = p.limit.Window
	}
	res, err := p.db.ExecContext(ctx, `DELETE FROM setflow_guard_admissions WHERE admitted_at < $1`, p.now().Add(-keep))
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}
