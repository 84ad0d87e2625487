// Package migrations holds setflow's versioned schema, embedded in the binary and
// applied with goose so that `setflow migrate` needs nothing but a database URL.
package migrations

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/pressly/goose/v3"
)

//go:embed *.sql
var files embed.FS

// TableName is goose's version table; prefixed so it never collides with a
// service's own migration tool when setflow shares its database.
const TableName = "setflow_schema_version"

func provider(db *sql.DB) (*goose.Provider, error) {
	return goose.NewProvider(goose.DialectPostgres, db, files,
		goose.WithTableName(TableName))
}

// Up applies every pending migration. Concurrent callers are serialised by a
// Postgres advisory lock so that several replicas may start at once.
func Up(ctx context.Context, db *sql.DB) error {
	return UpTo(ctx, db, 0)
}

// UpTo applies the pending migrations up to version (0: all); tests use it
// to build a database as an older release left it.
func UpTo(ctx context.Context, db *sql.DB, version int64) error {
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	// Arbitrary constant: "setflow" as digits. Held for the whole run.
	const lockID = 0x5e7f10
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, lockID); err != nil {
		return fmt.Errorf("migrate: lock: %w", err)
	}
	defer conn.ExecContext(context.Background(), `SELECT pg_advisory_unlock($1)`, lockID) //nolint:errcheck
	p, err := provider(db)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if version > 0 {
		_, err = p.UpTo(ctx, version)
	} else {
		_, err = p.Up(ctx)
	}
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	return nil
}

// Status reports the current and latest schema versions.
func Status(ctx context.Context, db *sql.DB) (current, latest int64, err error) {
	p, err := provider(db)
	if err != nil {
		return 0, 0, err
	}
	if current, err = p.GetDBVersion(ctx); err != nil {
		return 0, 0, err
	}
	srcs := p.ListSources()
	if len(srcs) > 0 {
		latest = srcs[len(srcs)-1].Version
	}
	return current, latest, nil
}

// ErrBehind means the database's schema is older than this binary's: the
// migrations have not run yet (or are running).
var ErrBehind = errors.New("database schema is behind this binary's version (run setflow migrate)")

// CheckCurrent returns nil when the schema is at (or, during a rolling
// upgrade whose new version migrated first, past) this binary's latest
// version; ErrBehind, wrapped with both versions, when it is older or the
// version table does not exist yet; another error when the database cannot
// be asked. Readiness uses it: a pod whose schema is behind must not take
// traffic it would answer with 5xx.
func CheckCurrent(ctx context.Context, db *sql.DB) error {
	var exists bool
	if err := db.QueryRowContext(ctx, `SELECT to_regclass($1) IS NOT NULL`, TableName).Scan(&exists); err != nil {
		return fmt.Errorf("schema version: %w", err)
	}
	latest := Latest()
	if !exists {
		return fmt.Errorf("%w: no %s table, want version %d", ErrBehind, TableName, latest)
	}
	cur, _, err := Status(ctx, db)
	if err != nil {
		return fmt.Errorf("schema version: %w", err)
	}
	if cur < latest {
		return fmt.Errorf("%w: at version %d, want %d", ErrBehind, cur, latest)
	}
	return nil
}

// Latest is the newest migration version embedded in this binary.
func Latest() int64 {
	var latest int64
	names, _ := fs.Glob(files, "*.sql")
	for _, n := range names {
		if v, err := goose.NumericComponent(n); err == nil && v > latest {
			latest = v
		}
	}
	return latest
}

// WaitCurrent blocks until CheckCurrent passes, polling every interval, or
// ctx ends: an init container (`setflow migrate -wait`) holds a pod back
// until the migrate Job has brought the schema to this binary's version.
func WaitCurrent(ctx context.Context, db *sql.DB, interval time.Duration, waiting func(error)) error {
	for {
		err := CheckCurrent(ctx, db)
		if err == nil {
			return nil
		}
		if waiting != nil {
			waiting(err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-time.After(interval):
		}
	}
}
