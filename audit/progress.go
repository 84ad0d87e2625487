package audit

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// Progress counts the audit rows of the events whose keys start with a
// prefix: a bench's own batch, watched while it runs.
type Progress struct {
	Rows int `db:"rows"`
	// Completed counts events whose reaction finished (step
	// "<event name>/completed", workflows.StepCompleted).
	Completed int `db:"completed"`
	// Failed counts steps that failed (outcome "failed").
	Failed int `db:"failed"`
}

// ProgressOf counts the rows of the events whose keys start with prefix.
func (p *Postgres) ProgressOf(ctx context.Context, prefix string) (Progress, error) {
	var pr Progress
	err := p.db.GetContext(ctx, &pr, `
		SELECT count(*) AS rows,
		       count(*) FILTER (WHERE step LIKE '%/completed') AS completed,
		       count(*) FILTER (WHERE outcome = 'failed') AS failed
		FROM setflow_audit WHERE starts_with(event_key, $1)`, prefix)
	if err != nil {
		return Progress{}, fmt.Errorf("audit: progress: %w", err)
	}
	return pr, nil
}

// Unfinished returns the subject hash of one event whose key starts with
// prefix that was received (step "<name>/received") and has not completed;
// ok is false when every such event has completed.
func (p *Postgres) Unfinished(ctx context.Context, prefix string) (subjectHash string, ok bool, err error) {
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
func (p *Postgres) DeleteEvents(ctx context.Context, prefix string) error {
	if _, err := p.db.ExecContext(ctx, `DELETE FROM setflow_audit WHERE starts_with(event_key, $1)`, prefix); err != nil {
		return fmt.Errorf("audit: delete: %w", err)
	}
	return nil
}
