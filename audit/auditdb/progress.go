package auditdb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/lib/pq"

	"github.com/setflow/setflow/audit"
)

// ProgressOf counts the rows of the events whose keys start with prefix.
func (p *Store) ProgressOf(ctx context.Context, prefix string) (audit.Progress, error) {
	var pr audit.Progress
	err := p.db.GetContext(ctx, &pr, `
		SELECT count(*) AS rows,
		       count(*) FILTER (WHERE step LIKE '%/completed') AS completed,
		       count(*) FILTER (WHERE outcome = 'failed') AS failed
		FROM setflow_audit WHERE starts_with(event_key, $1)`, prefix)
	if err != nil {
		return audit.Progress{}, fmt.Errorf("audit: progress: %w", err)
	}
	return pr, nil
}

// Unfinished returns the subject hash of one event whose key starts with
// prefix that was received (step "<name>/received") and has not completed;
// ok is false when every such event has completed.
func (p *Store) Unfinished(ctx context.Context, prefix string) (subjectHash string, ok bool, err error) {
	err = p.db.GetContext(ctx, &subjectHash, `
		SELECT r.subject_hash FROM setflow_audit r
		WHERE starts_with(r.event_key, $1) AND r.step LIKE '%/received'
		  AND NOT EXISTS (SELECT 1 FROM setflow_audit c WHERE c.event_key = r.event_key AND c.step LIKE '%/completed')
		LIMIT 1`, prefix)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("audit: unfinished: %w", err)
	}
	return subjectHash, true, nil
}

// DeleteEvents deletes the rows of the events whose keys start with prefix:
// a bench's own rows in a shared database (their chains end with them).
func (p *Store) DeleteEvents(ctx context.Context, prefix string) error {
	if _, err := p.db.ExecContext(ctx, `DELETE FROM setflow_audit WHERE starts_with(event_key, $1)`, prefix); err != nil {
		return fmt.Errorf("audit: delete: %w", err)
	}
	return nil
}

// Completed reports, for each of the event keys, the names of its events
// whose reaction completed: a "<event name>/completed" row
// (workflows.StepCompleted). Inbox retention keeps an entry until all its
// events are there.
func (p *Store) Completed(ctx context.Context, keys []string) (map[string][]string, error) {
	var rows []struct {
		Key  string `db:"event_key"`
		Name string `db:"name"`
	}
	if err := p.db.SelectContext(ctx, &rows, `
		SELECT event_key, left(step, -length('/completed')) AS name FROM setflow_audit
		WHERE event_key = ANY($1) AND step LIKE '%/completed'`, pq.Array(keys)); err != nil {
		return nil, fmt.Errorf("audit: completed: %w", err)
	}
	out := make(map[string][]string, len(rows))
	for _, r := range rows {
		out[r.Key] = append(out[r.Key], r.Name)
	}
	return out, nil
}
