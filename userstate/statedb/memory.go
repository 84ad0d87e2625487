package statedb

import (
	"context"
	"sync"

	"github.com/jmoiron/sqlx"

	"github.com/setflow/setflow/userstate"
)

// Memory is an in-process States for unit tests: not durable, and it
// projects nothing into the service's profile table (the Store does, in
// Apply's transaction). States and decisions are kept as JSON, as the Store
// keeps them, so that what a caller reads back went through the same
// encoding.
type Memory struct {
	mu    sync.Mutex
	users map[string]*memUser
}

type memUser struct {
	subject    userstate.Subject
	state      []byte
	crmVersion int64
	decisions  map[string][]byte
}

// NewMemory returns an empty store.
func NewMemory() *Memory { return &Memory{users: map[string]*memUser{}} }

// Apply runs fn under the store's lock, once per key.
func (m *Memory) Apply(_ context.Context, sub userstate.Subject, key string, fn func(userstate.State) (userstate.State, userstate.Decision)) (Result, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	u, ok := m.users[sub.Hash]
	if !ok {
		u = &memUser{subject: sub, state: []byte(`{}`), decisions: map[string][]byte{}}
		m.users[sub.Hash] = u
	}
	cur, err := decodeState(u.state)
	if err != nil {
		return Result{}, err
	}
	if stored, ok := u.decisions[key]; ok {
		return repeated(cur, stored)
	}
	next, d := fn(cur)
	stateJSON, decisionJSON, err := encodeApplied(next, d)
	if err != nil {
		return Result{}, err
	}
	u.crmVersion = crmVersionAfter(u.crmVersion, cur, next)
	u.state, u.decisions[key] = stateJSON, decisionJSON
	return Result{State: next, Decision: d}, nil
}

// Get returns the user's state.
func (m *Memory) Get(_ context.Context, hash string) (Snapshot, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	u, ok := m.users[hash]
	if !ok {
		return Snapshot{}, ErrNotFound
	}
	st, err := decodeState(u.state)
	if err != nil {
		return Snapshot{}, err
	}
	return Snapshot{Subject: u.subject, State: st, CRMVersion: u.crmVersion}, nil
}

// MarkSynced moves the CRM's sync mark forward.
func (m *Memory) MarkSynced(_ context.Context, hash string, version int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if u, ok := m.users[hash]; ok && u.crmVersion < version {
		u.crmVersion = version
	}
	return nil
}

// Locked runs fn with the user's state while holding the store's lock (so
// fn must not call the store); q is nil: Memory has no transaction.
func (m *Memory) Locked(_ context.Context, hash string, fn func(q sqlx.ExecerContext, s userstate.State) error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	u, ok := m.users[hash]
	if !ok {
		return ErrNotFound
	}
	cur, err := decodeState(u.state)
	if err != nil {
		return err
	}
	return fn(nil, cur)
}
