package inbox

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/setflow/setflow/event"
)

// Memory is an in-process Store for unit tests and for trying the ingress
// without a database. It is not durable and must never back a real deployment.
type Memory struct {
	mu      sync.Mutex
	entries []*memEntry
	byKey   map[string]*memEntry
	lastID  int64
	now     func() time.Time
}

type memEntry struct {
	Entry
	next        time.Time
	claimed     bool
	placeholder bool // made by Park (SourceParked)
}

// view is the entry as Get and List show it (see the Postgres row's view).
func (me *memEntry) view() Entry {
	e := me.Entry
	if me.placeholder {
		e.Envelope.Source = SourceParked
	}
	return e
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
	me := &memEntry{Entry: Entry{Envelope: e.Envelope, Raw: append([]byte(nil), e.Raw...)}, next: m.now()}
	m.add(me)
	return true, nil
}

// add stores a new entry, pending unless it says otherwise.
func (m *Memory) add(me *memEntry) {
	m.lastID++
	me.ID = m.lastID
	me.ReceivedAt = m.now()
	if me.Status == "" {
		me.Status = StatusPending
	}
	m.entries = append(m.entries, me)
	m.byKey[me.Envelope.Key] = me
}

func (m *Memory) Get(_ context.Context, key string) (Entry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	me, ok := m.byKey[key]
	if !ok {
		return Entry{}, ErrNotFound
	}
	return me.view(), nil
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
			m.mu.Lock()
			e := me.Entry
			m.mu.Unlock()
			var id string
			id, err = deliver(ctx, e)
			failed = err
			if err == nil {
				m.mu.Lock()
				me.WorkflowID = id
				m.mu.Unlock()
			}
		}
		m.mu.Lock()
		me.claimed = false
		me.Attempts++
		if err == nil {
			me.Status = StatusDispatched
			me.DispatchedAt = m.now()
			me.LastError = ""
		} else {
			me.next = m.now().Add(backoff(me.Attempts))
			me.LastError = clip(err.Error())
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

// Prune deletes the dispatched entries older than retention whose work is
// finished. finished is called without the store's lock.
func (m *Memory) Prune(ctx context.Context, retention time.Duration, finished Finished) (int64, error) {
	m.mu.Lock()
	cutoff := m.now().Add(-retention)
	var old []event.Envelope
	for _, me := range m.entries {
		if me.Status == StatusDispatched && me.DispatchedAt.Before(cutoff) {
			old = append(old, me.Envelope)
		}
	}
	m.mu.Unlock()
	if len(old) == 0 {
		return 0, nil
	}
	done, err := finished(ctx, old)
	if err != nil {
		return 0, fmt.Errorf("inbox: prune: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	kept := m.entries[:0]
	var n int64
	for _, me := range m.entries {
		if me.Status == StatusDispatched && me.DispatchedAt.Before(cutoff) && done[me.Envelope.Key] {
			delete(m.byKey, me.Envelope.Key)
			n++
			continue
		}
		kept = append(kept, me)
	}
	m.entries = kept
	return n, nil
}

// Park marks the entry parked, or adds a placeholder for a key with none.
func (m *Memory) Park(_ context.Context, key, reason, workflowID string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	me, ok := m.byKey[key]
	if !ok {
		me = &memEntry{Entry: Entry{Envelope: event.Envelope{Key: key}, Raw: []byte{}}, placeholder: true}
		me.Status = StatusParked
		m.add(me)
	}
	me.Status, me.LastError, me.WorkflowID = StatusParked, clip(reason), workflowID
	return nil
}

// Unpark marks a parked entry dispatched again.
func (m *Memory) Unpark(_ context.Context, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if me, ok := m.byKey[key]; ok && me.Status == StatusParked {
		me.Status, me.LastError = StatusDispatched, ""
	}
	return nil
}

// Requeue makes a parked entry pending and due now.
func (m *Memory) Requeue(_ context.Context, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if me, ok := m.byKey[key]; ok && me.Status == StatusParked {
		me.Status, me.next = StatusPending, m.now()
	}
	return nil
}

// List returns the entries the filter selects, without their Raw.
func (m *Memory) List(_ context.Context, f Filter) ([]Entry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := []Entry{}
	for i := range m.entries {
		me := m.entries[i]
		if !f.OldestFirst {
			me = m.entries[len(m.entries)-1-i]
		}
		e := me.view()
		e.Raw = nil
		if f.matches(e) {
			out = append(out, e)
		}
		if f.Limit > 0 && len(out) == f.Limit {
			break
		}
	}
	return out, nil
}
