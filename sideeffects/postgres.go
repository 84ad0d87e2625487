package sideeffects

import (
	"context"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
)

// Postgres is the Log in setflow's database. Deadlines are measured on the
// database's clock, which every worker shares.
type Postgres struct{ db *sqlx.DB }

// NewPostgres returns the Log on db (migrations applied).
func NewPostgres(db *sqlx.DB) *Postgres { return &Postgres{db: db} }

// Claim inserts the key, or takes over a claim whose attempt is over.
func (p *Postgres) Claim(ctx context.Context, key, kind string, deadline time.Duration) (Claim, error) {
	res, err := p.db.ExecContext(ctx, `
		INSERT INTO setflow_side_effects (idempotency_key, kind, status) VALUES ($1, $2, 'started')
		ON CONFLICT (idempotency_key) DO NOTHING`, key, kind)
	if err != nil {
		return Claim{}, fmt.Errorf("side effect log: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 1 {
		return Claim{Act: true}, nil
	}
	res, err = p.db.ExecContext(ctx, `
		UPDATE setflow_side_effects SET status = 'started', created_at = now(), attempts = attempts + 1
		WHERE idempotency_key = $1 AND (status = 'uncertain'
			OR (status = 'started' AND created_at < now() - $2 * interval '1 millisecond'))`,
		key, deadline.Milliseconds())
	if err != nil {
		return Claim{}, fmt.Errorf("side effect log: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 1 {
		return Claim{Act: true, Repeat: true}, nil
	}
	var status string
	if err := p.db.GetContext(ctx, &status, `SELECT status FROM setflow_side_effects WHERE idempotency_key = $1`, key); err != nil {
		return Claim{}, fmt.Errorf("side effect log: %w", err)
	}
	return Claim{Status: Status(status)}, nil
}

// Finish marks the key done.
func (p *Postgres) Finish(ctx context.Context, key, detail string) error {
	_, err := p.db.ExecContext(ctx, `UPDATE setflow_side_effects SET status = 'done', done_at = now(), detail = $2 WHERE idempotency_key = $1`, key, detail)
	if err != nil {
		return fmt.Errorf("side effect log: %w", err)
	}
	return nil
}

// Settle releases or marks uncertain a started claim.
func (p *Postgres) Settle(ctx context.Context, key string, maybeActed bool) error {
	q := `DELETE FROM setflow_side_effects WHERE idempotency_key = $1 AND status = 'started'`
	if maybeActed {
		q = `UPDATE setflow_side_effects SET status = 'uncertain' WHERE idempotency_key = $1 AND status = 'started'`
	}
	if _, err := p.db.ExecContext(ctx, q, key); err != nil {
		return fmt.Errorf("side effect log: %w", err)
	}
	return nil
}

// Attempts reports how many attempts claimed key (0 for an unknown key).
func (p *Postgres) Attempts(ctx context.Context, key string) (int, error) {
	var n int
	err := p.db.GetContext(ctx, &n, `SELECT coalesce(max(attempts), 0) FROM setflow_side_effects WHERE idempotency_key = $1`, key)
	if err != nil {
		return 0, fmt.Errorf("side effect log: %w", err)
	}
	return n, nil
}
