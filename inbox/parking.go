package inbox

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"
)

// Park marks the entry parked. A key whose entry is gone (pruned before it
// was guarded, or a key with no entry of its own) gets a placeholder that
// keeps the parked step listed and retryable; its raw body is empty, the
// audit trail has the rest.
func (p *Postgres) Park(ctx context.Context, key, reason, workflowID string) error {
	_, err := p.db.ExecContext(ctx, `
		INSERT INTO setflow_inbox (dedupe_key, source, raw, envelope, status, last_error, workflow_id)
		VALUES ($1, $4, '', jsonb_build_object('key', $1::text), 'parked', $2, $3)
		ON CONFLICT (dedupe_key) DO UPDATE SET status = 'parked', last_error = EXCLUDED.last_error, workflow_id = EXCLUDED.workflow_id`,
		key, clip(reason), workflowID, string(SourceParked))
	if err != nil {
		return fmt.Errorf("inbox: park: %w", err)
	}
	return nil
}

// Unpark marks a parked entry dispatched again.
func (p *Postgres) Unpark(ctx context.Context, key string) error {
	_, err := p.db.ExecContext(ctx, `UPDATE setflow_inbox SET status = 'dispatched', last_error = NULL WHERE dedupe_key = $1 AND status = 'parked'`, key)
	if err != nil {
		return fmt.Errorf("inbox: unpark: %w", err)
	}
	return nil
}

// Requeue makes a parked entry pending and due now.
func (p *Postgres) Requeue(ctx context.Context, key string) error {
	_, err := p.db.ExecContext(ctx, `UPDATE setflow_inbox SET status = 'pending', next_attempt_at = now() WHERE dedupe_key = $1 AND status = 'parked'`, key)
	if err != nil {
		return fmt.Errorf("inbox: requeue: %w", err)
	}
	return nil
}

// List selects entries in one query. The event filter matches inside the
// stored envelope (jsonb containment: a filter on rows already narrowed by
// the time bounds when they are given); the step is the part of a parked
// entry's reason before ": ", without a repeat's "#n".
func (p *Postgres) List(ctx context.Context, f Filter) ([]Entry, error) {
	order := "DESC"
	if f.OldestFirst {
		order = "ASC"
	}
	var rows []row
	err := p.db.SelectContext(ctx, &rows, `SELECT `+listColumns+` FROM setflow_inbox
		WHERE ($1 = '' OR status = $1)
		  AND ($2 = '' OR source = $2)
		  AND ($3 = '' OR envelope->'events' @> jsonb_build_array(jsonb_build_object('name', $3::text))
		               OR envelope->'events' @> jsonb_build_array(jsonb_build_object('type', $3::text)))
		  AND ($4 = '' OR split_part(split_part(last_error, ': ', 1), '#', 1) = $4
		               OR split_part(split_part(split_part(last_error, ': ', 1), '/', 2), '#', 1) = $4)
		  AND ($5::timestamptz IS NULL OR received_at >= $5)
		  AND ($6::timestamptz IS NULL OR received_at <= $6)
		ORDER BY id `+order+` LIMIT NULLIF($7, 0)`,
		string(f.Status), string(f.Source), f.Event, f.Step, nullTime(f.From), nullTime(f.Until), f.Limit)
	if err != nil {
		return nil, fmt.Errorf("inbox: list: %w", err)
	}
	out := make([]Entry, 0, len(rows))
	for _, r := range rows {
		out = append(out, r.view())
	}
	return out, nil
}

// CountKeys counts the entries whose key starts with prefix, in status when
// it is not empty: a bench's own entries in a shared database.
func (p *Postgres) CountKeys(ctx context.Context, prefix string, status Status) (int, error) {
	var n int
	err := p.db.GetContext(ctx, &n, `SELECT count(*) FROM setflow_inbox WHERE starts_with(dedupe_key, $1) AND ($2 = '' OR status = $2)`,
		prefix, string(status))
	if err != nil {
		return 0, fmt.Errorf("inbox: count: %w", err)
	}
	return n, nil
}

// DeleteKeys deletes the entries whose key starts with prefix and vacuums the
// table, so that a bench reusing the keys pays what a first insert costs.
func (p *Postgres) DeleteKeys(ctx context.Context, prefix string) error {
	if _, err := p.db.ExecContext(ctx, `DELETE FROM setflow_inbox WHERE starts_with(dedupe_key, $1)`, prefix); err != nil {
		return fmt.Errorf("inbox: delete: %w", err)
	}
	if _, err := p.db.ExecContext(ctx, `VACUUM setflow_inbox`); err != nil {
		return fmt.Errorf("inbox: vacuum: %w", err)
	}
	return nil
}

// matches reports whether the filter selects e (the in-memory store's
// reading of List's query).
func (f Filter) matches(e Entry) bool {
	switch {
	case f.Status != "" && e.Status != f.Status,
		f.Source != "" && e.Envelope.Source != f.Source,
		!f.From.IsZero() && e.ReceivedAt.Before(f.From),
		!f.Until.IsZero() && e.ReceivedAt.After(f.Until):
		return false
	}
	if f.Step != "" {
		step, _, _ := strings.Cut(e.LastError, ": ")
		step, _, _ = strings.Cut(step, "#") // a policy's second send_notice is send_notice#2
		parts := strings.Split(step, "/")
		if step != f.Step && (len(parts) < 2 || parts[1] != f.Step) {
			return false
		}
	}
	if f.Event == "" {
		return true
	}
	for _, ev := range e.Envelope.Events {
		if ev.Name == f.Event || ev.Type == f.Event {
			return true
		}
	}
	return false
}

func nullTime(t time.Time) sql.NullTime { return sql.NullTime{Time: t, Valid: !t.IsZero()} }
