package identity

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/setflow/setflow/sessions"
)

// TableSchema names the service's mapping table, e.g. a `social_accounts`
// table with (provider, provider_user_id, account_id) and the filter
// provider = 'kakao'.
type TableSchema struct {
	Table         string // may be schema-qualified
	UserColumn    string // the Kakao user id
	AccountColumn string // the service's account id
	// IssuerColumn, if set, holds the issuer; rows of other issuers do not map.
	IssuerColumn string
	// Filter is an optional fixed condition "column=value" (provider=kakao).
	Filter string
}

// Validate refuses names that are not plain SQL identifiers, like the
// sessions schema: a typo fails at start-up, not at the first event.
func (s TableSchema) Validate() error {
	if err := sessions.ValidTable("identity", s.Table); err != nil {
		return err
	}
	cols := map[string]string{"user column": s.UserColumn, "account column": s.AccountColumn}
	if s.IssuerColumn != "" {
		cols["issuer column"] = s.IssuerColumn
	}
	if s.Filter != "" {
		col, _, ok := strings.Cut(s.Filter, "=")
		if !ok {
			return fmt.Errorf("identity: filter %q must be column=value", s.Filter)
		}
		cols["filter column"] = strings.TrimSpace(col)
	}
	for what, name := range cols {
		if err := sessions.ValidIdentifier("identity", what, name); err != nil {
			return err
		}
	}
	return nil
}

func (s TableSchema) filter() (col, val string) {
	if s.Filter == "" {
		return "", ""
	}
	col, val, _ = strings.Cut(s.Filter, "=")
	return strings.TrimSpace(col), strings.TrimSpace(val)
}

// Table looks accounts up in the service's own mapping table.
type Table struct {
	db              *sqlx.DB
	accounts, users string
	issuer          bool
	filterValue     string
	filtered        bool
}

// NewTable validates the schema and prepares the statements. Ids are
// compared and returned as text, so integer id columns work too.
func NewTable(db *sqlx.DB, s TableSchema) (*Table, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	q := pq.QuoteIdentifier
	t := &Table{db: db, issuer: s.IssuerColumn != ""}
	issuerSel := "''"
	if t.issuer {
		issuerSel = q(s.IssuerColumn) + "::text"
	}
	where := []string{q(s.UserColumn) + "::text = $1"}
	whereRev := []string{q(s.AccountColumn) + "::text = $1"}
	next := 2
	if t.issuer {
		where = append(where, fmt.Sprintf("%s::text = $%d", q(s.IssuerColumn), next))
		next++
	}
	if col, val := s.filter(); col != "" {
		t.filtered, t.filterValue = true, val
		where = append(where, fmt.Sprintf("%s::text = $%d", q(col), next))
		whereRev = append(whereRev, q(col)+"::text = $2")
	}
	table := sessions.QuoteTable(s.Table)
	t.accounts = fmt.Sprintf(`SELECT DISTINCT %s::text FROM %s WHERE %s ORDER BY 1`, q(s.AccountColumn), table, strings.Join(where, " AND "))
	t.users = fmt.Sprintf(`SELECT DISTINCT %s, %s::text FROM %s WHERE %s ORDER BY 1, 2`, issuerSel, q(s.UserColumn), table, strings.Join(whereRev, " AND "))
	return t, nil
}

// Accounts returns the user's account ids.
func (t *Table) Accounts(ctx context.Context, issuer, kakaoUserID string) ([]string, error) {
	args := []any{kakaoUserID}
	if t.issuer {
		args = append(args, issuer)
	}
	if t.filtered {
		args = append(args, t.filterValue)
	}
	var out []string
	if err := t.db.SelectContext(ctx, &out, t.accounts, args...); err != nil {
		return nil, tableError(err)
	}
	return out, nil
}

// Users returns the Kakao users of an account.
func (t *Table) Users(ctx context.Context, accountID string) ([]User, error) {
	args := []any{accountID}
	if t.filtered {
		args = append(args, t.filterValue)
	}
	rows, err := t.db.QueryContext(ctx, t.users, args...)
	if err != nil {
		return nil, tableError(err)
	}
	defer rows.Close()
	var out []User
	for rows.Next() {
		var u User
		if err := rows.Scan(&u.Issuer, &u.UserID); err != nil {
			return nil, tableError(err)
		}
		out = append(out, u)
	}
	return out, tableError(rows.Err())
}

// tableError marks schema errors (undefined table or column, SQLSTATE class
// 42) as permanent; anything else (connection lost) is retried.
func tableError(err error) error {
	if err == nil {
		return nil
	}
	var pe *pq.Error
	if errors.As(err, &pe) && pe.Code.Class() == "42" {
		return fmt.Errorf("%w: %s", ErrRejected, pe.Message)
	}
	return fmt.Errorf("identity: lookup: %w", err)
}
