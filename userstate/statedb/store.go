// Package statedb stores the per-user state of package userstate: Store in
// PostgreSQL (it owns the SQL of setflow_user_state and setflow_user_events
// and projects each new state into the service's profile table), Memory for
// unit tests, and Reader for the status API's lookups. Both stores pass one
// contract (contract_test.go).
package statedb

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jmoiron/sqlx"

	"github.com/setflow/setflow/userstate"
)

// States is the per-user state store: Store (PostgreSQL) and Memory pass
// the same contract (contract_test.go).
type States interface {
	// Apply runs fn on the user's state, once per key and one at a time per
	// user: a key applied before returns its stored decision (Repeat)
	// without running fn. Users never wait for one another.
	Apply(ctx context.Context, sub userstate.Subject, key string, fn func(userstate.State) (userstate.State, userstate.Decision)) (Result, error)
	// Get returns the user's state, ErrNotFound for a user with none.
	Get(ctx context.Context, hash string) (Snapshot, error)
	// MarkSynced records that the CRM holds version (never moving the mark
	// back).
	MarkSynced(ctx context.Context, hash string, version int64) error
	// Locked runs fn with the user's current state under the user's row
	// lock, one at a time per user and serialised with Apply; q executes in
	// the lock's transaction (nil for Memory), so what fn writes through it
	// commits with the lock's release. ErrNotFound for a user with no state.
	Locked(ctx context.Context, hash string, fn func(q sqlx.ExecerContext, s userstate.State) error) error
}

// crmVersionAfter is the CRM's sync mark after an apply moved the state
// from cur to next: a change that leaves the desired CRM contact as it was
// keeps a CRM that was in sync in sync (crmVersion >= version means "nothing
// to send"). The Store computes the same in its UPDATE.
func crmVersionAfter(crmVersion int64, cur, next userstate.State) int64 {
	if crmVersion >= cur.Version && next.Contact() == cur.Contact() {
		return next.Version
	}
	return crmVersion
}

// getSnapshot is the one query that reads a user's state (Store.Get and the
// Reader's prepared statement).
const getSnapshot = `SELECT issuer, user_id, state, crm_version FROM setflow_user_state WHERE subject_hash = $1`

// snapshotRow is a row of getSnapshot.
type snapshotRow struct {
	Issuer     string `db:"issuer"`
	UserID     string `db:"user_id"`
	State      []byte `db:"state"`
	CRMVersion int64  `db:"crm_version"`
}

// readSnapshot runs get (getSnapshot on some handle) into a Snapshot.
func readSnapshot(hash string, get func(dest any) error) (Snapshot, error) {
	var row snapshotRow
	err := get(&row)
	if errors.Is(err, sql.ErrNoRows) {
		return Snapshot{}, ErrNotFound
	}
	if err != nil {
		return Snapshot{}, fmt.Errorf("userstate: %w", err)
	}
	st, err := decodeState(row.State)
	if err != nil {
		return Snapshot{}, err
	}
	return Snapshot{Subject: userstate.Subject{Hash: hash, Issuer: row.Issuer, UserID: row.UserID}, State: st, CRMVersion: row.CRMVersion}, nil
}

// decodeState reads a state as the stores keep it (JSON).
func decodeState(raw []byte) (userstate.State, error) {
	var s userstate.State
	if err := json.Unmarshal(raw, &s); err != nil {
		return userstate.State{}, fmt.Errorf("userstate: stored state: %w", err)
	}
	return s, nil
}

// repeated is the result of a key applied before: its stored decision on the
// current state.
func repeated(cur userstate.State, storedDecision []byte) (Result, error) {
	var d userstate.Decision
	if err := json.Unmarshal(storedDecision, &d); err != nil {
		return Result{}, fmt.Errorf("userstate: stored decision: %w", err)
	}
	return Result{State: cur, Decision: d, Repeat: true}, nil
}

// encodeApplied encodes an apply's new state and decision as stored.
func encodeApplied(next userstate.State, d userstate.Decision) (stateJSON, decisionJSON []byte, err error) {
	if stateJSON, err = json.Marshal(next); err != nil {
		return nil, nil, err
	}
	if decisionJSON, err = json.Marshal(d); err != nil {
		return nil, nil, err
	}
	return stateJSON, decisionJSON, nil
}
