package inbox

import (
	"context"
	"sync"
	"time"
)

// Memory is an in-process Store for unit tests and for trying the ingress
// without a database. It is not durable and must never back a real deployment.
type Memory struct {
	mu      sync.Mutex
	entries []*memEntry
	byKey   map[string]*memEntry
	now     func() time.Time
}

type memEntry struct {
	Entry
	next         time.Time
	claimed      bool
	dispatchedAt time.Time
}

// NewMemory returns an empty in-memory Store.
func NewMemory() *Memory {
	return &Memory{byKey: map[string]*memEntry{}, now: time.Now}
}

func (m *Memory) Put(_ context.Context, e Entry) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.byKey[e.Envelope.Key]; ok {
		return false, nil
	}
	me := &memEntry{Entry: e, next: m.now()}
	me.ID = int64(len(m.entries) + 1)
	me.Status = StatusPending
	me.Attempts = 0
	me.Raw = append([]byte(nil), e.Raw...)
	m.entries = append(m.entries, me)
	m.byKey[e.Envelope.Key] = me
	return true, nil
}

func (m *Memory) Get(_ context.Context, key string) (Entry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	me, ok := m.byKey[key]
	if !ok {
		return Entry{}, ErrNotFound
	}
	return me.Entry, nil
}

// ReceivedAfter reports whether the entry under key was received after t.
func (m *Memory) ReceivedAfter(_ context.Context, key string, t time.Time) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	me, ok := m.byKey[key]
	return ok && me.Envelope.ReceivedAt.After(t), nil
}

func (m *Memory) Relay(ctx context.Context, limit int, deliver Deliver, backoff Backoff) (int, error) {
	m.mu.Lock()
	var batch []*memEntry
	now := m.now()
	for _, me := range m.entries {
		if len(batch) == limit {
			break
		}
		if me.Status == StatusPending && !me.claimed && !me.next.After(now) {
			me.claimed = true
			batch = append(batch, me)
		}
	}
	m.mu.Unlock()
	var failed error
	for _, me := range batch {
		err := failed
		if err == nil {
			// Like the Postgres store: after a failure the rest of the batch is
			// not tried and waits for its backoff.
			_, err = deliver(ctx, me.Entry)
			failed = err
		}
		m.mu.Lock()
		me.claimed = false
		me.Attempts++
		if err == nil {
			me.Status = StatusDispatched
			me.dispatchedAt = m.now()
		} else {
			me.next = m.now().Add(backoff(me.Attempts))
		}
		m.mu.Unlock()
	}
	return len(batch), nil
}

// Len reports how many entries are stored.
func (m *Memory) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.entries)
}

// Prune deletes dispatched entries older than retention.
func (m *Memory) Prune(_ context.Context, retention time.Duration) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cutoff := m.now().Add(-retention)
	kept := m.entries[:0]
	var n int64
	for _, me := range m.entries {
		if me.Status == StatusDispatched && me.dispatchedAt.Before(cutoff) {
			delete(m.byKey, me.Envelope.Key)
			n++
			continue
		}
		kept = append(kept, me)
	}
	m.entries = kept
	return n, nil
}
