// Package sessions ends a user's sessions in the service's own session store.
// Revocation is time-aware: sessions created after the event happened are kept,
// because the user may already have signed in again. The callers pass the
// last creation time an event covers (event.SessionsUpTo: a whole-second
// event time covers its second); the stores compare "at or before" it.
package sessions

import (
	"context"
	"fmt"
	"regexp"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// Revoker ends sessions of one user that were created at or before a time.
type Revoker interface {
	// Revoke returns how many sessions it ended. Calling it again with the same
	// arguments ends nothing more, so it is safe under retry.
	Revoke(ctx context.Context, userID string, createdBefore time.Time) (int64, error)
}

// Schema names the table and columns of the service's session table, so that
// setflow can work on a schema it does not own.
type Schema struct {
	Table     string // may be schema-qualified: "auth.sessions"
	UserID    string
	CreatedAt string
	RevokedAt string
}

// DefaultSchema matches the table created by setflow's migrations.
func DefaultSchema() Schema {
	return Schema{Table: "sessions", UserID: "user_id", CreatedAt: "created_at", RevokedAt: "revoked_at"}
}

var identifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}$`)

// Validate refuses names that are not plain SQL identifiers; they are quoted
// anyway, but a typo should fail at start-up, not at the first event.
func (s Schema) Validate() error {
	check := func(what, name string) error {
		if !identifier.MatchString(name) {
			return fmt.Errorf("sessions: %s %q is not a valid SQL identifier", what, name)
		}
		return nil
	}
	parts := splitQualified(s.Table)
	if len(parts) == 0 || len(parts) > 2 {
		return fmt.Errorf("sessions: table %q must be name or schema.name", s.Table)
	}
	for _, p := range parts {
		if err := check("table", p); err != nil {
			return err
		}
	}
	for what, name := range map[string]string{"user id column": s.UserID, "created-at column": s.CreatedAt, "revoked-at column": s.RevokedAt} {
		if err := check(what, name); err != nil {
			return err
		}
	}
	return nil
}

func splitQualified(name string) []string {
	var parts []string
	start := 0
	for i := 0; i <= len(name); i++ {
		if i == len(name) || name[i] == '.' {
			parts = append(parts, name[start:i])
			start = i + 1
		}
	}
	return parts
}

func (s Schema) quotedTable() string {
	out := ""
	for i, p := range splitQualified(s.Table) {
		if i > 0 {
			out += "."
		}
		out += pq.QuoteIdentifier(p)
	}
	return out
}

// Postgres revokes sessions by setting the revoked-at column.
type Postgres struct {
	db     *sqlx.DB
	revoke string
	purge  string
}

// NewPostgres validates the schema and prepares the statement text.
func NewPostgres(db *sqlx.DB, s Schema) (*Postgres, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	q := fmt.Sprintf(`UPDATE %s SET %s = now() WHERE %s = $1 AND %s <= $2 AND %s IS NULL`,
		s.quotedTable(), pq.QuoteIdentifier(s.RevokedAt), pq.QuoteIdentifier(s.UserID),
		pq.QuoteIdentifier(s.CreatedAt), pq.QuoteIdentifier(s.RevokedAt))
	purge := fmt.Sprintf(`DELETE FROM %s WHERE %s = $1 AND %s <= $2`,
		s.quotedTable(), pq.QuoteIdentifier(s.UserID), pq.QuoteIdentifier(s.CreatedAt))
	return &Postgres{db: db, revoke: q, purge: purge}, nil
}

// Revoke ends the user's sessions created at or before createdBefore.
func (p *Postgres) Revoke(ctx context.Context, userID string, createdBefore time.Time) (int64, error) {
	res, err := p.db.ExecContext(ctx, p.revoke, userID, createdBefore)
	if err != nil {
		return 0, fmt.Errorf("sessions: revoke: %w", err)
	}
	return res.RowsAffected()
}

// Purger deletes a user's sessions, for data purges. Sessions created after
// the cut-off are kept: the user may have linked again and signed in since.
type Purger interface {
	// Purge returns how many sessions it deleted. Calling it again with the
	// same arguments deletes nothing more, so it is safe under retry.
	Purge(ctx context.Context, userID string, createdAtOrBefore time.Time) (int64, error)
}

// The purge activity finds a Purger by type assertion, which would quietly
// fail on a signature mismatch; these make such a mismatch a compile error.
var (
	_ Purger = (*Postgres)(nil)
	_ Purger = (*Redis)(nil)
)

// Purge deletes the user's session rows created at or before createdAtOrBefore,
// revoked or not.
func (p *Postgres) Purge(ctx context.Context, userID string, createdAtOrBefore time.Time) (int64, error) {
	res, err := p.db.ExecContext(ctx, p.purge, userID, createdAtOrBefore)
	if err != nil {
		return 0, fmt.Errorf("sessions: purge: %w", err)
	}
	return res.RowsAffected()
}

// ValidIdentifier refuses a name that is not a plain SQL identifier; pkg and
// what say where it came from ("identity", "account column").
func ValidIdentifier(pkg, what, name string) error {
	if !identifier.MatchString(name) {
		return fmt.Errorf("%s: %s %q is not a valid SQL identifier", pkg, what, name)
	}
	return nil
}

// ValidTable refuses a table name that is not name or schema.name.
func ValidTable(pkg, table string) error {
	parts := splitQualified(table)
	if len(parts) == 0 || len(parts) > 2 {
		return fmt.Errorf("%s: table %q must be name or schema.name", pkg, table)
	}
	for _, p := range parts {
		if err := ValidIdentifier(pkg, "table", p); err != nil {
			return err
		}
	}
	return nil
}

// QuoteTable quotes a validated, possibly schema-qualified table name.
func QuoteTable(table string) string { return Schema{Table: table}.quotedTable() }
