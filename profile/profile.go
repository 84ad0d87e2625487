// Package profile keeps the service's user profile that reactions update: link
// status, lock and re-authentication flags, consents and the fields Kakao shares
// (email, nickname, phone). It is a projection of the per-user state
// (package userstate), which decides every change by event time; this package
// only reads the row and writes the projection.
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

// Projection is the user's state as the service's profile table shows it;
// userstate writes it in the same transaction as the state it derives from,
// so the table never disagrees with the state machine.
type Projection struct {
	Email, Nickname, Phone sql.NullString
	Consents               []string
	Linked                 sql.NullBool
	LinkChangedAt          sql.NullTime
	Locked                 bool
	LockChangedAt          sql.NullTime
	ReauthRequiredAt       sql.NullTime
	ProfileChangedAt       sql.NullTime
	ConsentsChangedAt      sql.NullTime
}

// Project writes p as the user's row (locale, which no event sets, is kept).
func Project(ctx context.Context, tx sqlx.ExecerContext, k Key, p Projection) error {
	consents := p.Consents
	if consents == nil {
		consents = []string{}
	}
	_, err := tx.ExecContext(ctx, `
		INSERT INTO user_profiles (issuer, user_id, email, nickname, phone_number, consents, linked, link_changed_at,
			locked, lock_changed_at, reauth_required_at, profile_changed_at, consents_changed_at, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, now())
		ON CONFLICT (issuer, user_id) DO UPDATE SET
			email = EXCLUDED.email, nickname = EXCLUDED.nickname, phone_number = EXCLUDED.phone_number,
			consents = EXCLUDED.consents, linked = EXCLUDED.linked, link_changed_at = EXCLUDED.link_changed_at,
			locked = EXCLUDED.locked, lock_changed_at = EXCLUDED.lock_changed_at,
			reauth_required_at = EXCLUDED.reauth_required_at, profile_changed_at = EXCLUDED.profile_changed_at,
			consents_changed_at = EXCLUDED.consents_changed_at, updated_at = now()`,
		k.Issuer, k.UserID, p.Email, p.Nickname, p.Phone, pq.Array(consents), p.Linked, p.LinkChangedAt,
		p.Locked, p.LockChangedAt, p.ReauthRequiredAt, p.ProfileChangedAt, p.ConsentsChangedAt)
	if err != nil {
		return fmt.Errorf("profile: project: %w", err)
	}
	return nil
}
