package unknowns

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/setflow/setflow/internal/testenv"
)

// memStore is a Store in memory that can fail or block.
type memStore struct {
	mu    sync.Mutex
	rows  map[Kind]int64
	fail  int           // the next fail calls to Add fail
	block chan struct{} // Add waits on it when set
}

func (m *memStore) Add(ctx context.Context, seen map[Kind]int64) error {
	if m.block != nil {
		select {
		case <-m.block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail > 0 {
		m.fail--
		return errors.New("store down (test)")
	}
	if m.rows == nil {
		m.rows = map[Kind]int64{}
	}
	for k, n := range seen {
		m.rows[k] += n
	}
	return nil
}

func (m *memStore) List(context.Context) ([]Row, error) { return nil, nil }

func (m *memStore) count(k Kind) int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.rows[k]
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Note never waits: not for a recorder that is not running, not for a store
// that hangs. A full queue drops notes rather than hold a delivery.
func TestNoteNeverBlocks(t *testing.T) {
	store := &memStore{block: make(chan struct{})}
	r := NewRecorder(store, nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 10 * queueSize {
			r.Note(func() []Kind { return []Kind{{Route: "set", Kind: EventType, Detail: "x"}} })
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Note blocked on a recorder that is not running")
	}
	var nilRecorder *Recorder
	nilRecorder.Note(func() []Kind { return nil }) // no panic, no effect
}

// A failed write keeps the counts for the next flush; a panicking finder
// (an odd delivery) is survived.
func TestRecorderRetriesAndSurvivesPanics(t *testing.T) {
	store := &memStore{fail: 2}
	r := NewRecorder(store, nil)
	r.FlushEvery = 20 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { defer close(stopped); r.Run(ctx) }()
	k := Kind{Route: "set", Kind: EventField, Detail: "account-disabled.severity"}
	r.Note(func() []Kind { panic("odd delivery") })
	for range 3 {
		r.Note(func() []Kind { return []Kind{k} })
	}
	waitUntil(t, "the kinds to be written after the store came back", func() bool { return store.count(k) == 3 })
	// Noted just before the end: written by the final flush.
	other := Kind{Route: "unlink", Kind: Field, Detail: "extra"}
	r.Note(func() []Kind { return []Kind{other} })
	cancel()
	<-stopped
	if store.count(other) != 1 {
		t.Fatalf("the final flush lost a kind: %d", store.count(other))
	}
}

// Names that are not names (data in a member name) are not recorded as such.
func TestName(t *testing.T) {
	for in, want := range map[string]string{
		"severity": "severity",
		"https://schemas.openid.net/secevent/risc/event-type/x": "https://schemas.openid.net/secevent/risc/event-type/x",
		"kim@example.com":         "(not a name)",
		"010 1234 5678":           "(not a name)",
		"":                        "(not a name)",
		string(make([]byte, 200)): "(not a name)",
	} {
		if got := Name(in); got != want {
			t.Errorf("Name(%q) = %q, want %q", in, got, want)
		}
	}
}

// The table keeps one row per kind and counts repeats.
func TestPostgresOneRowPerKind(t *testing.T) {
	db, _ := testenv.Database(t)
	p := NewPostgres(db)
	ctx := context.Background()
	a := Kind{Route: "set", Kind: EventType, Detail: "urn:x"}
	b := Kind{Route: "talk-channel", Kind: Spelling, Detail: "timestamp"}
	if err := p.Add(ctx, map[Kind]int64{a: 2, b: 1}); err != nil {
		t.Fatal(err)
	}
	if err := p.Add(ctx, map[Kind]int64{a: 1}); err != nil {
		t.Fatal(err)
	}
	rows, err := p.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 {
		t.Fatalf("rows %+v", rows)
	}
	if rows[0].Kind != a || rows[0].Seen != 3 || rows[1].Kind != b || rows[1].Seen != 1 {
		t.Fatalf("rows %+v, want %v seen 3 first, then %v seen 1", rows, a, b)
	}
}
