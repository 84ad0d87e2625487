package userstate

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jmoiron/sqlx"
)

// Reader reads users' states for the status API, on a login's hot path: one
// prepared primary-key lookup (a single round trip per request, where an
// unprepared query with arguments takes two).
type Reader struct{ stmt *sqlx.Stmt }

// NewReader prepares the lookup.
func NewReader(ctx context.Context, db *sqlx.DB) (*Reader, error) {
	stmt, err := db.PreparexContext(ctx, `SELECT issuer, user_id, state, crm_version FROM setflow_user_state WHERE subject_hash = $1`)
	if err != nil {
		return nil, fmt.Errorf("userstate: %w", err)
	}
	return &Reader{stmt: stmt}, nil
}

// Get returns the user's state, ErrNotFound for a user with none.
func (r *Reader) Get(ctx context.Context, hash string) (Snapshot, error) {
	var row struct {
		Issuer     string `db:"issuer"`
		UserID     string `db:"user_id"`
		State      []byte `db:"state"`
		CRMVersion int64  `db:"crm_version"`
	}
	err := r.stmt.GetContext(ctx, &row, hash)
	if errors.Is(err, sql.ErrNoRows) {
		return Snapshot{}, ErrNotFound
	}
	if err != nil {
		return Snapshot{}, fmt.Errorf("userstate: %w", err)
	}
	snap := Snapshot{Subject: Subject{Hash: hash, Issuer: row.Issuer, UserID: row.UserID}, CRMVersion: row.CRMVersion}
	if err := json.Unmarshal(row.State, &snap.State); err != nil {
		return Snapshot{}, fmt.Errorf("userstate: stored state: %w", err)
	}
	return snap, nil
}

// Close releases the prepared statement.
func (r *Reader) Close() error { return r.stmt.Close() }
