package statedb

import (
	"context"
	"fmt"

	"github.com/jmoiron/sqlx"
)

// Reader reads users' states for the status API, on a login's hot path: one
// prepared primary-key lookup (a single round trip per request, where an
// unprepared query with arguments takes two).
type Reader struct{ stmt *sqlx.Stmt }

// NewReader prepares the lookup.
func NewReader(ctx context.Context, db *sqlx.DB) (*Reader, error) {
	stmt, err := db.PreparexContext(ctx, getSnapshot)
	if err != nil {
		return nil, fmt.Errorf("userstate: %w", err)
	}
	return &Reader{stmt: stmt}, nil
}

// Get returns the user's state, ErrNotFound for a user with none.
func (r *Reader) Get(ctx context.Context, hash string) (Snapshot, error) {
	return readSnapshot(hash, func(dest any) error { return r.stmt.GetContext(ctx, dest, hash) })
}

// Close releases the prepared statement.
func (r *Reader) Close() error { return r.stmt.Close() }
