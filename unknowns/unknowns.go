// Package unknowns records the shapes of deliveries setflow did not expect —
// an unknown event type, an unknown field of a known event, a delivery sent
// again after it was answered 2xx — once per kind, so that the wire-format
// notes (docs/webhooks.md) can be corrected from real traffic
// (`setflow events unknowns`). A kind names a route, an event type or a field,
// never a value: the table holds no personal data.
//
// Recording never slows or fails a delivery: the ingress hands the Recorder a
// function that finds the kinds, which runs on the Recorder's own goroutine;
// a full queue drops the note (the same kind comes again with the next such
// delivery), a failed write is logged and retried with the next flush.
package unknowns

import (
	"context"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
)

// What a Kind is about.
const (
	// EventType: a SET event type setflow does not know (Detail: its URI).
	EventType = "event-type"
	// EventField: a member of a known event that setflow does not read
	// (Detail: "<event name>.<member>").
	EventField = "event-field"
	// Claim: a top-level SET claim setflow does not read (Detail: its name).
	Claim = "claim"
	// Field: a member of a form or JSON webhook setflow does not read.
	Field = "field"
	// Spelling: one of two documented spellings that the notes did not
	// expect Kakao to use (Detail: the name, e.g. "txn" or "timestamp").
	Spelling = "spelling"
	// Redelivered: a delivery stored before came again after its 2xx answer
	// (Detail: "after <status>"): Kakao retries, or did not take the status
	// as success — the notes' 200-vs-202 question.
	Redelivered = "redelivered"
)

// Kind is one unexpected shape. Route is the delivery's source (set, unlink,
// talk-channel, talk-share).
type Kind struct {
	Route  string `db:"route" json:"route"`
	Kind   string `db:"kind" json:"kind"`
	Detail string `db:"detail" json:"detail"`
}

// Row is a kind as recorded.
type Row struct {
	Kind
	FirstSeen time.Time `db:"first_seen" json:"first_seen"`
	LastSeen  time.Time `db:"last_seen" json:"last_seen"`
	Seen      int64     `db:"seen" json:"seen"`
}

// Store keeps the kinds.
type Store interface {
	// Add records each kind once, counting how often it was seen.
	Add(ctx context.Context, seen map[Kind]int64) error
	// List returns every kind, most recently seen first.
	List(ctx context.Context) ([]Row, error)
}

// maxName bounds a recorded name: event type URIs and field names are short.
const maxName = 120

// Name is how a field name or event type is recorded: as is when it looks
// like a name (letters, digits and _ - . : / #, at most maxName bytes), else a
// placeholder — a member "name" that is really data (an address, a token)
// must not end up in the table.
func Name(s string) string {
	if s == "" || len(s) > maxName {
		return "(not a name)"
	}
	for _, c := range s {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9',
			c == '_', c == '-', c == '.', c == ':', c == '/', c == '#':
		default:
			return "(not a name)"
		}
	}
	if strings.Contains(s, "@") {
		return "(not a name)"
	}
	return s
}

// Postgres is the Store in setflow's database (table setflow_unknowns).
type Postgres struct{ db *sqlx.DB }

// NewPostgres returns the store on db.
func NewPostgres(db *sqlx.DB) *Postgres { return &Postgres{db: db} }

// Add upserts every kind in one statement per kind, in a stable order so that
// two ingress replicas flushing at once do not deadlock.
func (p *Postgres) Add(ctx context.Context, seen map[Kind]int64) error {
	kinds := make([]Kind, 0, len(seen))
	for k := range seen {
		kinds = append(kinds, k)
	}
	sort.Slice(kinds, func(i, j int) bool {
		a, b := kinds[i], kinds[j]
		if a.Route != b.Route {
			return a.Route < b.Route
		}
		if a.Kind != b.Kind {
			return a.Kind < b.Kind
		}
		return a.Detail < b.Detail
	})
	for _, k := range kinds {
		if _, err := p.db.ExecContext(ctx, `
			INSERT INTO setflow_unknowns (route, kind, detail, seen) VALUES ($1, $2, $3, $4)
			ON CONFLICT (route, kind, detail) DO UPDATE
			SET seen = setflow_unknowns.seen + EXCLUDED.seen, last_seen = now()`,
			k.Route, k.Kind, k.Detail, seen[k]); err != nil {
			return err
		}
	}
	return nil
}

// List returns every kind, most recently seen first.
func (p *Postgres) List(ctx context.Context) ([]Row, error) {
	var rows []Row
	err := p.db.SelectContext(ctx, &rows, `SELECT route, kind, detail, first_seen, last_seen, seen
		FROM setflow_unknowns ORDER BY last_seen DESC, route, kind, detail`)
	return rows, err
}

// Recorder collects kinds off the request path and writes them in batches.
// A nil *Recorder records nothing.
type Recorder struct {
	store Store
	log   *slog.Logger
	queue chan func() []Kind
	// FlushEvery is how often collected kinds are written (default 2 s).
	FlushEvery time.Duration

	mu      sync.Mutex
	pending map[Kind]int64
}

// queueSize bounds the notes waiting for the Recorder's goroutine.
const queueSize = 1024

// maxPending bounds the distinct kinds held between flushes (a store that
// stays down must not grow the ingress's memory).
const maxPending = 1000

// NewRecorder records into store; run it with Run.
func NewRecorder(store Store, log *slog.Logger) *Recorder {
	if log == nil {
		log = slog.Default()
	}
	return &Recorder{store: store, log: log, queue: make(chan func() []Kind, queueSize), pending: map[Kind]int64{}}
}

// Note queues find, which the Recorder's goroutine calls to learn a
// delivery's unexpected kinds. It never blocks: when the queue is full the
// note is dropped.
func (r *Recorder) Note(find func() []Kind) {
	if r == nil || find == nil {
		return
	}
	select {
	case r.queue <- find:
	default:
	}
}

// Run takes notes until ctx ends, writing what it collected every
// FlushEvery and once more at the end.
func (r *Recorder) Run(ctx context.Context) {
	every := r.FlushEvery
	if every <= 0 {
		every = 2 * time.Second
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case find := <-r.queue:
			r.collect(find)
		case <-tick.C:
			r.flush(ctx)
		case <-ctx.Done():
		drain:
			for {
				select {
				case find := <-r.queue:
					r.collect(find)
				default:
					break drain
				}
			}
			fctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			r.flush(fctx)
			cancel()
			return
		}
	}
}

// collect runs find; a panic in it (an odd delivery) is logged, not fatal.
func (r *Recorder) collect(find func() []Kind) {
	defer func() {
		if p := recover(); p != nil {
			r.log.Warn("unknowns: a delivery's shape could not be read", "panic", p)
		}
	}()
	kinds := find()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, k := range kinds {
		if _, ok := r.pending[k]; !ok && len(r.pending) >= maxPending {
			continue
		}
		r.pending[k]++
	}
}

func (r *Recorder) flush(ctx context.Context) {
	r.mu.Lock()
	batch := r.pending
	if len(batch) == 0 {
		r.mu.Unlock()
		return
	}
	r.pending = map[Kind]int64{}
	r.mu.Unlock()
	if err := r.store.Add(ctx, batch); err != nil {
		r.log.Warn("unknowns: not recorded, will retry", "kinds", len(batch), "error", err)
		r.mu.Lock()
		for k, n := range batch {
			if _, ok := r.pending[k]; ok || len(r.pending) < maxPending {
				r.pending[k] += n
			}
		}
		r.mu.Unlock()
	}
}
