package sideeffects

import (
	"context"
	"sync"
	"time"
)

// Memory is an in-process Log for unit tests; it is not durable.
type Memory struct {
	mu      sync.Mutex
	entries map[string]*memEntry
	// Now is the clock deadlines are measured on (time.Now when nil).
	Now func() time.Time
}

type memEntry struct {
	status   Status
	kind     string
	started  time.Time
	attempts int
	detail   string
}

// NewMemory returns an empty Log.
func NewMemory() *Memory { return &Memory{entries: map[string]*memEntry{}} }

func (m *Memory) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

// Claim claims a new key, or takes over a claim whose attempt is over.
func (m *Memory) Claim(_ context.Context, key, kind string, deadline time.Duration) (Claim, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	e, ok := m.entries[key]
	switch {
	case !ok:
		m.entries[key] = &memEntry{status: StatusStarted, kind: kind, started: now, attempts: 1}
		return Claim{Act: true}, nil
	case e.status == StatusUncertain, e.status == StatusStarted && e.started.Before(now.Add(-deadline)):
		e.status, e.started = StatusStarted, now
		e.attempts++
		return Claim{Act: true, Repeat: true}, nil
	}
	return Claim{Status: e.status}, nil
}

// Finish marks the key done.
func (m *Memory) Finish(_ context.Context, key, detail string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.entries[key]; ok {
		e.status, e.detail = StatusDone, detail
	}
	return nil
}

// Settle releases or marks uncertain a started claim.
func (m *Memory) Settle(_ context.Context, key string, maybeActed bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.entries[key]
	switch {
	case !ok || e.status != StatusStarted:
	case maybeActed:
		e.status = StatusUncertain
	default:
		delete(m.entries, key)
	}
	return nil
}

// Attempts reports how many attempts claimed key (0 for an unknown key).
func (m *Memory) Attempts(_ context.Context, key string) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.entries[key]; ok {
		return e.attempts, nil
	}
	return 0, nil
}
