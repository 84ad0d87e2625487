package statedb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/setflow/setflow/profile"
	"github.com/setflow/setflow/userstate"
)

// Result is what one apply did.
type Result struct {
	State    userstate.State    `json:"state"`
	Decision userstate.Decision `json:"decision"`
	// Repeat is true when the key was applied before: Decision is the stored
	// one and nothing changed now.
	Repeat bool `json:"repeat,omitempty"`
}

// Store keeps the per-user state in PostgreSQL (setflow_user_state and
// setflow_user_events) and projects it into the service's profile table in
// the same transaction. It owns the SQL of those two tables.
type Store struct{ db *sqlx.DB }

// NewStore returns the store on db.
func NewStore(db *sqlx.DB) *Store { return &Store{db: db} }

// ErrNotFound is returned by Get for a user with no state.
var ErrNotFound = errors.New("userstate: no such user")

// Apply runs fn on the user's state under the user's row lock, once per key:
// a key applied before returns its stored decision (Repeat) without running
// fn. Only this user's row is locked; other users never wait.
func (s *Store) Apply(ctx context.Context, sub userstate.Subject, key string, fn func(userstate.State) (userstate.State, userstate.Decision)) (Result, error) {
	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		return Result{}, fmt.Errorf("userstate: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck
	if _, err := tx.ExecContext(ctx, `
		INSERT INTO setflow_user_state (subject_hash, issuer, user_id) VALUES ($1, $2, $3)
		ON CONFLICT (subject_hash) DO NOTHING`, sub.Hash, sub.Issuer, sub.UserID); err != nil {
		return Result{}, fmt.Errorf("userstate: %w", err)
	}
	cur, err := lockState(ctx, tx, sub.Hash)
	if err != nil {
		return Result{}, err
	}
	var stored []byte
	err = tx.GetContext(ctx, &stored, `SELECT decision FROM setflow_user_events WHERE subject_hash = $1 AND event_key = $2`, sub.Hash, key)
	switch {
	case err == nil:
		res, err := repeated(cur, stored)
		if err != nil {
			return Result{}, err
		}
		return res, tx.Commit()
	case !errors.Is(err, sql.ErrNoRows):
		return Result{}, fmt.Errorf("userstate: %w", err)
	}
	next, d := fn(cur)
	stateJSON, decisionJSON, err := encodeApplied(next, d)
	if err != nil {
		return Result{}, err
	}
	// A change that leaves the desired CRM contact as it was keeps a CRM
	// that was in sync in sync: crm_version >= version means "nothing to send".
	if _, err := tx.ExecContext(ctx, `
		UPDATE setflow_user_state SET state = $2, version = $3, updated_at = now(),
			crm_version = CASE WHEN crm_version >= $4 AND NOT $5 THEN $3 ELSE crm_version END
		WHERE subject_hash = $1`,
		sub.Hash, stateJSON, next.Version, cur.Version, next.Contact() != cur.Contact()); err != nil {
		return Result{}, fmt.Errorf("userstate: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO setflow_user_events (subject_hash, event_key, decision, version) VALUES ($1, $2, $3, $4)`,
		sub.Hash, key, decisionJSON, next.Version); err != nil {
		return Result{}, fmt.Errorf("userstate: %w", err)
	}
	if next.Version != cur.Version {
		if err := profile.Project(ctx, tx, profile.Key{Issuer: sub.Issuer, UserID: sub.UserID}, Projection(next)); err != nil {
			return Result{}, err
		}
	}
	if err := tx.Commit(); err != nil {
		return Result{}, fmt.Errorf("userstate: %w", err)
	}
	return Result{State: next, Decision: d}, nil
}

// Locked runs fn with the user's state under the user's row lock (States).
func (s *Store) Locked(ctx context.Context, hash string, fn func(q sqlx.ExecerContext, s userstate.State) error) error {
	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("userstate: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck
	cur, err := lockState(ctx, tx, hash)
	if err != nil {
		return err
	}
	if err := fn(tx, cur); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("userstate: %w", err)
	}
	return nil
}

// lockState takes the user's row lock in tx and reads the state under it
// (ErrNotFound for a user with no row).
func lockState(ctx context.Context, tx *sqlx.Tx, hash string) (userstate.State, error) {
	var raw []byte
	err := tx.GetContext(ctx, &raw, `SELECT state FROM setflow_user_state WHERE subject_hash = $1 FOR UPDATE`, hash)
	if errors.Is(err, sql.ErrNoRows) {
		return userstate.State{}, ErrNotFound
	}
	if err != nil {
		return userstate.State{}, fmt.Errorf("userstate: %w", err)
	}
	return decodeState(raw)
}

// Snapshot is a user's stored state with its subject and sync mark.
type Snapshot struct {
	Subject userstate.Subject
	State   userstate.State
	// CRMVersion is the state version the CRM was last synced to.
	CRMVersion int64
}

// Get returns the user's state.
func (s *Store) Get(ctx context.Context, hash string) (Snapshot, error) {
	return readSnapshot(hash, func(dest any) error { return s.db.GetContext(ctx, dest, getSnapshot, hash) })
}

// MarkSynced records that the CRM holds version (never moving the mark back).
func (s *Store) MarkSynced(ctx context.Context, hash string, version int64) error {
	_, err := s.db.ExecContext(ctx, `UPDATE setflow_user_state SET crm_version = $2 WHERE subject_hash = $1 AND crm_version < $2`, hash, version)
	if err != nil {
		return fmt.Errorf("userstate: %w", err)
	}
	return nil
}

// Projection is the profile row the state shows.
func Projection(s userstate.State) profile.Projection {
	p := profile.Projection{Consents: s.Granted(), Locked: s.Lock.Value == userstate.Locked}
	str := func(f userstate.Field) sql.NullString {
		v := s.Field(f)
		return sql.NullString{String: v, Valid: v != ""}
	}
	at := func(t time.Time) sql.NullTime { return sql.NullTime{Time: t, Valid: !t.IsZero()} }
	p.Email, p.Nickname, p.Phone = str(userstate.Email), str(userstate.Nickname), str(userstate.Phone)
	if s.Link.Set() {
		p.Linked = sql.NullBool{Bool: s.Link.Value == userstate.Linked, Valid: true}
	}
	p.LinkChangedAt, p.LockChangedAt, p.ReauthRequiredAt = at(s.Link.At), at(s.Lock.At), at(s.Reauth)
	var fieldsAt, consentsAt time.Time
	for _, r := range s.Fields {
		if r.At.After(fieldsAt) {
			fieldsAt = r.At
		}
	}
	for _, r := range s.Consents {
		if r.At.After(consentsAt) {
			consentsAt = r.At
		}
	}
	p.ProfileChangedAt, p.ConsentsChangedAt = at(fieldsAt), at(consentsAt)
	return p
}

// DeleteUsers deletes the state and the applied events of every user whose
// id starts with prefix: a bench's own users in a shared database.
func (s *Store) DeleteUsers(ctx context.Context, prefix string) error {
	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("userstate: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck
	if _, err := tx.ExecContext(ctx, `DELETE FROM setflow_user_events WHERE subject_hash IN (
		SELECT subject_hash FROM setflow_user_state WHERE starts_with(user_id, $1))`, prefix); err != nil {
		return fmt.Errorf("userstate: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM setflow_user_state WHERE starts_with(user_id, $1)`, prefix); err != nil {
		return fmt.Errorf("userstate: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("userstate: %w", err)
	}
	return nil
}

// PendingPurges reports which of the event keys a user's pending purge still
// names: the purge parks and audits under the key of the unlink that
// scheduled it, so inbox retention keeps that entry until the purge ran or
// was cancelled.
func (s *Store) PendingPurges(ctx context.Context, keys []string) (map[string]bool, error) {
	var named []string
	if err := s.db.SelectContext(ctx, &named, `
		SELECT state->'purge'->>'event_key' FROM setflow_user_state WHERE state->'purge'->>'event_key' = ANY($1)`, pq.Array(keys)); err != nil {
		return nil, fmt.Errorf("userstate: pending purges: %w", err)
	}
	out := make(map[string]bool, len(named))
	for _, k := range named {
		out[k] = true
	}
	return out, nil
}
