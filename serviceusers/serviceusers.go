// Package serviceusers writes what setflow decided about a user — locked,
// re-authentication required since, unlinked since — into the service's own
// user table, so that a login path that reads its users table enforces it
// without asking setflow. Table and column names are configurable and
// validated like the sessions schema; a column left empty is not written.
package serviceusers

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/setflow/setflow/sessions"
)

// Schema names the service's user table and the columns setflow writes.
type Schema struct {
	Table    string // may be schema-qualified
	IDColumn string // the service's account id
	// LockedColumn (boolean), ReauthColumn (timestamptz: re-authentication
	// required since, NULL when not) and UnlinkedColumn (timestamptz: the
	// user unlinked the app at, NULL when linked). Empty: not written. A
	// session created at or before either time must end; the callers give a
	// time in whole seconds as its second's end (event.SessionsUpTo).
	LockedColumn   string
	ReauthColumn   string
	UnlinkedColumn string
}

// Enabled reports whether any column is to be written.
func (s Schema) Enabled() bool {
	return s.LockedColumn != "" || s.ReauthColumn != "" || s.UnlinkedColumn != ""
}

// Validate refuses names that are not plain SQL identifiers.
func (s Schema) Validate() error {
	if !s.Enabled() {
		return errors.New("serviceusers: name at least one of the locked, re-auth and unlinked columns")
	}
	if err := sessions.ValidTable("serviceusers", s.Table); err != nil {
		return err
	}
	cols := map[string]string{"id column": s.IDColumn}
	for what, name := range map[string]string{"locked column": s.LockedColumn, "re-auth column": s.ReauthColumn, "unlinked column": s.UnlinkedColumn} {
		if name != "" {
			cols[what] = name
		}
	}
	for what, name := range cols {
		if err := sessions.ValidIdentifier("serviceusers", what, name); err != nil {
			return err
		}
	}
	return nil
}

// Flags is what is written: the user's current state, never a delta.
type Flags struct {
	Locked        bool
	ReauthSince   time.Time // zero: not required
	UnlinkedSince time.Time // zero: linked (or never seen)
}

// Writer updates the service's user rows.
type Writer struct {
	db     *sqlx.DB
	update string
	cols   []string
}

// NewWriter validates the schema and prepares the statement.
func NewWriter(db *sqlx.DB, s Schema) (*Writer, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	q := pq.QuoteIdentifier
	w := &Writer{db: db}
	var set []string
	for _, c := range []struct{ kind, name string }{{"locked", s.LockedColumn}, {"reauth", s.ReauthColumn}, {"unlinked", s.UnlinkedColumn}} {
		if c.name == "" {
			continue
		}
		w.cols = append(w.cols, c.kind)
		set = append(set, fmt.Sprintf("%s = $%d", q(c.name), len(set)+2))
	}
	// IS DISTINCT FROM leaves a row that already holds the state untouched
	// (no dead tuple, no trigger) when the same state is written again.
	var differs []string
	for i, c := range set {
		col, _, _ := strings.Cut(c, " = ")
		differs = append(differs, fmt.Sprintf("%s IS DISTINCT FROM $%d", col, i+2))
	}
	w.update = fmt.Sprintf(`UPDATE %s SET %s WHERE %s::text = $1 AND (%s)`, sessions.QuoteTable(s.Table),
		strings.Join(set, ", "), q(s.IDColumn), strings.Join(differs, " OR "))
	return w, nil
}

// Write sets the account's row to f; it returns how many rows changed (0
// when the row already held f or the account has no row). Safe to repeat.
func (w *Writer) Write(ctx context.Context, q sqlx.ExecerContext, accountID string, f Flags) (int64, error) {
	if q == nil {
		q = w.db
	}
	args := []any{accountID}
	ts := func(t time.Time) sql.NullTime { return sql.NullTime{Time: t, Valid: !t.IsZero()} }
	for _, c := range w.cols {
		switch c {
		case "locked":
			args = append(args, f.Locked)
		case "reauth":
			args = append(args, ts(f.ReauthSince))
		case "unlinked":
			args = append(args, ts(f.UnlinkedSince))
		}
	}
	res, err := q.ExecContext(ctx, w.update, args...)
	if err != nil {
		var pe *pq.Error
		if errors.As(err, &pe) && (pe.Code.Class() == "42" || pe.Code.Class() == "22") {
			return 0, fmt.Errorf("%w: %s", ErrSchema, pe.Message)
		}
		return 0, fmt.Errorf("serviceusers: update: %w", err)
	}
	return res.RowsAffected()
}

// ErrSchema is wrapped when the table or a column does not exist or has the
// wrong type: a configuration error that retrying cannot fix.
var ErrSchema = errors.New("serviceusers: the user table does not match the configuration")
