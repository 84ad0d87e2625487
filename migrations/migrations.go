// Package migrations holds setflow's versioned schema, embedded in the binary and
// applied with goose so that `setflow migrate` needs nothing but a database URL.
package migrations

import (
	"context"
	"database/sql"
	"embed"
	"fmt"

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
	current, latest, err = 0, 0, nil
	if current, err = p.GetDBVersion(ctx); err != nil {
		return 0, 0, err
	}
	srcs := p.ListSources()
	if len(srcs) > 0 {
		latest = srcs[len(srcs)-1].Version
	}
	return current, latest, nil
}
