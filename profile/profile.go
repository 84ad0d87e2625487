// Package profile keeps the service's user profile that reactions update: link
// status, lock and re-authentication flags, consents and the fields Kakao shares
// (email, nickname, phone). Each change is guarded by the time of the event
// that caused it: an event older than the last applied change of the same kind
// is a no-op, so late or reordered deliveries never undo newer state.
package profile

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// Key names a user.
type Key struct {
	Issuer string
	UserID string
}

// Profile is one stored user.
type Profile struct {
	Issuer            string         `db:"issuer"`
	UserID            string         `db:"user_id"`
	Email             sql.NullString `db:"email"`
	Nickname          sql.NullString `db:"nickname"`
	PhoneNumber       sql.NullString `db:"phone_number"`
	Locale            sql.NullString `db:"locale"`
	Consents          pq.StringArray `db:"consents"`
	Linked            sql.NullBool   `db:"linked"`
	LinkChangedAt     sql.NullTime   `db:"link_changed_at"`
	Locked            bool           `db:"locked"`
	LockChangedAt     sql.NullTime   `db:"lock_changed_at"`
	ReauthRequiredAt  sql.NullTime   `db:"reauth_required_at"`
	ProfileChangedAt  sql.NullTime   `db:"profile_changed_at"`
	ConsentsChangedAt sql.NullTime   `db:"consents_changed_at"`
	UpdatedAt         time.Time      `db:"updated_at"`
}

// Fields are profile attributes from Kakao; nil leaves a field unchanged.
type Fields struct {
	Email       *string
	Nickname    *string
	PhoneNumber *string
}

// ErrNotFound is returned by Get for an unknown user.
var ErrNotFound = errors.New("profile: no such user")

// Store is the Postgres profile table.
type Store struct{ db *sqlx.DB }

// NewStore returns the store on db.
func NewStore(db *sqlx.DB) *Store { return &Store{db: db} }

// Get returns one profile.
func (s *Store) Get(ctx context.Context, k Key) (Profile, error) {
	var p Profile
	err := s.db.GetContext(ctx, &p, `SELECT * FROM user_profiles WHERE issuer = $1 AND user_id = $2`, k.Issuer, k.UserID)
	if errors.Is(err, sql.ErrNoRows) {
		return p, ErrNotFound
	}
	if err != nil {
		return p, fmt.Errorf("profile: get: %w", err)
	}
	return p, nil
}

// ensure creates the row if missing, so guarded updates have a row to guard.
func (s *Store) ensure(ctx context.Context, tx *sqlx.Tx, k Key) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO user_profiles (issuer, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`, k.Issuer, k.UserID)
	return err
}

// guarded runs one UPDATE whose WHERE clause compares the event time with the
// change time it maintains; it reports whether the change applied.
func (s *Store) guarded(ctx context.Context, k Key, query string, args ...any) (bool, error) {
	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("profile: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck
	if err := s.ensure(ctx, tx, k); err != nil {
		return false, fmt.Errorf("profile: %w", err)
	}
	res, err := tx.ExecContext(ctx, query, append([]any{k.Issuer, k.UserID}, args...)...)
	if err != nil {
		return false, fmt.Errorf("profile: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, err
	}
	return n == 1, tx.Commit()
}

// SetLinked records a link or unlink that happened at t.
func (s *Store) SetLinked(ctx context.Context, k Key, linked bool, t time.Time) (bool, error) {
	return s.guarded(ctx, k, `
		UPDATE user_profiles SET linked = $3, link_changed_at = $4, updated_at = now()
		WHERE issuer = $1 AND user_id = $2 AND (link_changed_at IS NULL OR link_changed_at <= $4)`, linked, t)
}

// SetLocked locks or unlocks the account. An unlock applies only if no lock
// happened after it, and vice versa.
func (s *Store) SetLocked(ctx context.Context, k Key, locked bool, t time.Time) (bool, error) {
	return s.guarded(ctx, k, `
		UPDATE user_profiles SET locked = $3, lock_changed_at = $4, updated_at = now()
		WHERE issuer = $1 AND user_id = $2 AND (lock_changed_at IS NULL OR lock_changed_at <= $4)`, locked, t)
}

// RequireReauth makes logins from before t re-authenticate at the next use.
func (s *Store) RequireReauth(ctx context.Context, k Key, t time.Time) (bool, error) {
	return s.guarded(ctx, k, `
		UPDATE user_profiles SET reauth_required_at = $3, updated_at = now()
		WHERE issuer = $1 AND user_id = $2 AND (reauth_required_at IS NULL OR reauth_required_at < $3)`, t)
}

// UpdateFields stores profile fields observed at t (nil fields unchanged).
func (s *Store) UpdateFields(ctx context.Context, k Key, f Fields, t time.Time) (bool, error) {
	return s.guarded(ctx, k, `
		UPDATE user_profiles SET
			email = COALESCE($3, email), nickname = COALESCE($4, nickname),
			phone_number = COALESCE($5, phone_number), profile_changed_at = $6, updated_at = now()
		WHERE issuer = $1 AND user_id = $2 AND (profile_changed_at IS NULL OR profile_changed_at <= $6)`,
		f.Email, f.Nickname, f.PhoneNumber, t)
}

// ScopeFields maps Kakao consent scopes to the profile columns they cover, so
// that a withdrawn scope deletes exactly its data.
var ScopeFields = map[string][]string{
	"account_email":    {"email"},
	"profile":          {"nickname"},
	"profile_nickname": {"nickname"},
	"phone_number":     {"phone_number"},
}

// UpdateConsents adds granted scopes and removes withdrawn ones, deleting the
// withdrawn scopes' fields. It returns the deleted field names.
func (s *Store) UpdateConsents(ctx context.Context, k Key, granted, withdrawn []string, t time.Time) ([]string, error) {
	var cleared []string
	set := ""
	for _, scope := range withdrawn {
		for _, col := range ScopeFields[scope] {
			cleared = append(cleared, col)
			set += ", " + pq.QuoteIdentifier(col) + " = NULL"
		}
	}
	applied, err := s.guarded(ctx, k, `
		UPDATE user_profiles SET
			consents = ARRAY(SELECT DISTINCT c FROM unnest(consents || COALESCE($3::text[], '{}')) AS c WHERE NOT c = ANY(COALESCE($4::text[], '{}')) ORDER BY c),
			consents_changed_at = $5, updated_at = now()`+set+`
		WHERE issuer = $1 AND user_id = $2 AND (consents_changed_at IS NULL OR consents_changed_at <= $5)`,
		pq.Array(granted), pq.Array(withdrawn), t)
	if err != nil || !applied {
		return nil, err
	}
	return cleared, nil
}

// DetachIdentifier clears the email and phone number when Kakao reports the
// identifier was recycled (it now belongs to someone else).
func (s *Store) DetachIdentifier(ctx context.Context, k Key, t time.Time) (bool, error) {
	return s.guarded(ctx, k, `
		UPDATE user_profiles SET email = NULL, phone_number = NULL, profile_changed_at = $3, updated_at = now()
		WHERE issuer = $1 AND user_id = $2 AND (profile_changed_at IS NULL OR profile_changed_at <= $3)`, t)
}

// Purge deletes the user's profile. With unlinkedBefore set, it deletes only
// if the user is still unlinked by a change at or before that time — a user who
// linked again since keeps their data.
func (s *Store) Purge(ctx context.Context, k Key, unlinkedBefore *time.Time) (bool, error) {
	q := `DELETE FROM user_profiles WHERE issuer = $1 AND user_id = $2`
	args := []any{k.Issuer, k.UserID}
	if unlinkedBefore != nil {
		q += ` AND linked IS NOT TRUE AND (link_changed_at IS NULL OR link_changed_at <= $3)`
		args = append(args, *unlinkedBefore)
	}
	res, err := s.db.ExecContext(ctx, q, args...)
	if err != nil {
		return false, fmt.Errorf("profile: purge: %w", err)
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}

// StillUnlinked reports whether the user has not linked again after t.
func (s *Store) StillUnlinked(ctx context.Context, k Key, t time.Time) (bool, error) {
	p, err := s.Get(ctx, k)
	if errors.Is(err, ErrNotFound) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	if p.Linked.Valid && p.Linked.Bool && p.LinkChangedAt.Valid && p.LinkChangedAt.Time.After(t) {
		return false, nil
	}
	return true, nil
}
