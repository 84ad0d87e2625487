package inbox

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lib/pq"
)

// Group commit of Put.
//
// A commit costs the same WAL flush whether it holds one row or a hundred, so
// Put does not insert on its own: it queues its entry and waits for the commit
// that holds it. The batching rule:
//
//   - At most MaxInFlight insert statements (two by default) run at once. Each is a single
//     multi-row INSERT … ON CONFLICT (dedupe_key) DO NOTHING, its own
//     transaction: it stores all of its rows or none.
//   - A Put that finds a free slot starts a statement at once with whatever is
//     queued (at least itself). There is no timer and no wait for company: a
//     lone request on an idle store goes straight to the database.
//   - A Put that finds every slot busy waits in the queue. When a statement
//     finishes, its slot takes everything queued (up to MaxBatch) as the next
//     statement. So the entries that arrive while the commits in flight run
//     share the next commit, and batches grow with the load.
//
// Each Put returns only after the statement holding its row has committed (or
// failed, or the caller's context ended): every nil error means a committed
// row. A failed statement fails exactly the Puts it held and stored none of
// them; a Put whose context ended before its statement started is left out.
// A key that comes twice in one batch is inserted once, and its later copies
// report a duplicate (inserted=false) like a copy that came later would.
// Rows are inserted in key order, so that two statements (of this process or
// of another replica) that share keys wait for each other in the same order
// and never deadlock.

// Defaults of Postgres.MaxInFlight and Postgres.MaxBatch. With two
// statements in flight, one batch is executed while the other one's commit
// is flushed (Postgres flushes concurrent commits together), and a statement
// stuck on a row lock leaves the other lane going. On the 2-core development
// machine (setflow bench, 32 clients, -inbox-in-flight 1 and 2 in alternating
// pairs) two lanes accepted 5–20% more than one in each pair, with about 9
// rows per commit against 16; the machine was shared and noisy, and earlier
// pairs under heavier load (before the statement was prepared) were mixed.
const (
	DefaultMaxInFlight = 2
	DefaultMaxBatch    = 500
)

type groupCommit struct {
	mu       sync.Mutex
	queue    []*pendingPut
	inFlight int

	batches, failed, entries atomic.Int64
	busy                     atomic.Int64 // nanoseconds in insert statements

	stmtMu sync.Mutex
	stmt   *sql.Stmt
}

// pendingPut is one Put waiting for its commit.
type pendingPut struct {
	ctx      context.Context
	key      string
	source   string
	raw      []byte
	envelope []byte // JSON
	// done is buffered, so that answering never blocks on a Put that gave up.
	done chan putOutcome
}

type putOutcome struct {
	inserted bool
	err      error
}

// PutStats counts Put's commits since the store was made.
type PutStats struct {
	// Batches is how many insert statements (each its own transaction) ran,
	// Failed how many of them failed, and Entries how many Puts they held.
	Batches, Failed, Entries int64
	// Busy is the time spent in insert statements, summed over the slots
	// (from sending a statement to reading its commit).
	Busy time.Duration
	// Queued is how many Puts wait for a free slot right now.
	Queued int
	// Notifies is how many wake-up NOTIFYs were sent (see wake).
	Notifies int64
}

// PutStats reports how Put's commits were shared.
func (p *Postgres) PutStats() PutStats {
	g := &p.commits
	g.mu.Lock()
	queued := len(g.queue)
	g.mu.Unlock()
	return PutStats{Batches: g.batches.Load(), Failed: g.failed.Load(), Entries: g.entries.Load(),
		Busy: time.Duration(g.busy.Load()), Queued: queued, Notifies: p.notifies.Load()}
}

// Put stores the entry in the next group commit (see above) and returns once
// that commit is done. Relays are then woken by a NOTIFY sent after the commit
// (see wake).
func (p *Postgres) Put(ctx context.Context, e Entry) (bool, error) {
	if e.Envelope.Key == "" {
		return false, errors.New("inbox: empty dedupe key")
	}
	env, err := json.Marshal(e.Envelope)
	if err != nil {
		return false, fmt.Errorf("inbox: encode envelope: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("inbox: put: %w", err)
	}
	w := &pendingPut{ctx: ctx, key: e.Envelope.Key, source: string(e.Envelope.Source), raw: e.Raw,
		envelope: env, done: make(chan putOutcome, 1)}
	g := &p.commits
	g.mu.Lock()
	g.queue = append(g.queue, w)
	start := g.inFlight < p.maxInFlight()
	if start {
		g.inFlight++
	}
	g.mu.Unlock()
	if start {
		go p.commitLoop()
	}
	select {
	case o := <-w.done:
		return o.inserted, o.err
	case <-ctx.Done():
		select {
		case o := <-w.done: // answered at the same moment: keep the commit's answer
			return o.inserted, o.err
		default:
		}
		// The statement holding the row may still commit: the caller's
		// error answer is then followed by a duplicate on the retry.
		return false, fmt.Errorf("inbox: put: %w", context.Cause(ctx))
	}
}

func (p *Postgres) maxInFlight() int {
	if p.MaxInFlight > 0 {
		return p.MaxInFlight
	}
	return DefaultMaxInFlight
}

func (p *Postgres) maxBatch() int {
	if p.MaxBatch > 0 {
		return p.MaxBatch
	}
	return DefaultMaxBatch
}

// commitLoop holds one slot: it commits what is queued, batch after batch,
// and frees the slot when the queue is empty.
func (p *Postgres) commitLoop() {
	g := &p.commits
	for {
		g.mu.Lock()
		n := min(len(g.queue), p.maxBatch())
		if n == 0 {
			g.inFlight--
			g.mu.Unlock()
			return
		}
		batch := g.queue[:n:n]
		if n == len(g.queue) {
			g.queue = nil
		} else {
			g.queue = g.queue[n:]
		}
		g.mu.Unlock()
		p.commitBatch(batch)
	}
}

// commitBatch inserts the batch in one statement and answers each Put.
func (p *Postgres) commitBatch(batch []*pendingPut) {
	// A Put whose context ended has answered already: leave its row out.
	live := batch[:0]
	for _, w := range batch {
		if w.ctx.Err() == nil {
			live = append(live, w)
		}
	}
	if len(live) == 0 {
		return
	}
	// The first copy of each key goes to the database, in key order.
	first := make(map[string]*pendingPut, len(live))
	rows := make([]*pendingPut, 0, len(live))
	for _, w := range live {
		if _, dup := first[w.key]; !dup {
			first[w.key] = w
			rows = append(rows, w)
		}
	}
	slices.SortFunc(rows, func(a, b *pendingPut) int { return strings.Compare(a.key, b.key) })

	ctx, cancel := batchContext(live)
	t0 := time.Now()
	inserted, err := p.insertRows(ctx, rows)
	p.commits.busy.Add(int64(time.Since(t0)))
	cancel()
	p.commits.batches.Add(1)
	p.commits.entries.Add(int64(len(live)))
	if err != nil {
		p.commits.failed.Add(1)
		err = fmt.Errorf("inbox: put: %w", err)
	} else if len(inserted) > 0 {
		p.wake()
	}
	for _, w := range live {
		if err != nil {
			w.done <- putOutcome{err: err}
			continue
		}
		_, ok := inserted[w.key]
		w.done <- putOutcome{inserted: ok && first[w.key] == w}
	}
}

// batchContext bounds a statement by the latest deadline of the Puts it holds
// (no bound if one has none), and is not cancelled when one of them gives up:
// the others still wait for it.
func batchContext(batch []*pendingPut) (context.Context, context.CancelFunc) {
	var latest time.Time
	for _, w := range batch {
		d, ok := w.ctx.Deadline()
		if !ok {
			return context.WithCancel(context.Background())
		}
		if d.After(latest) {
			latest = d
		}
	}
	return context.WithDeadline(context.Background(), latest)
}

// insertBatchSQL zips its arrays row by row (ROWS FROM). The raw bodies come
// as one bytea cut by offset and length, and the envelopes as one JSON array:
// as bytea[] and text[] each body and envelope was escaped into an array
// literal by the driver and parsed out of it again by the server, which cost
// both sides about a tenth of the statement (inbox: setflow bench, 8 rows).
const insertBatchSQL = `
	INSERT INTO setflow_inbox (dedupe_key, source, raw, envelope)
	SELECT b.k, b.s, substring($3::bytea FROM b.o FOR b.n), b.e
	FROM ROWS FROM (unnest($1::text[]), unnest($2::text[]), unnest($4::int[]), unnest($5::int[]),
	                jsonb_array_elements($6::jsonb)) AS b(k, s, o, n, e)
	ON CONFLICT (dedupe_key) DO NOTHING
	RETURNING dedupe_key`

// insertStatement prepares the batch insert once (database/sql prepares it
// again on each connection it runs on), so that a batch costs one round trip
// to the server instead of two.
func (p *Postgres) insertStatement(ctx context.Context) (*sql.Stmt, error) {
	g := &p.commits
	g.stmtMu.Lock()
	defer g.stmtMu.Unlock()
	if g.stmt == nil {
		st, err := p.db.PrepareContext(ctx, insertBatchSQL)
		if err != nil {
			return nil, err
		}
		g.stmt = st
	}
	return g.stmt, nil
}

// insertRows inserts rows in one statement (so in one transaction) and returns
// the keys it inserted; the others were stored already. The implicit
// transaction commits before the server reports the statement complete, and
// the driver reads up to that report before rows.Next ends without error: a
// nil error means committed.
func (p *Postgres) insertRows(ctx context.Context, rows []*pendingPut) (map[string]struct{}, error) {
	keys := make([]string, len(rows))
	sources := make([]string, len(rows))
	offsets := make([]int64, len(rows))
	lengths := make([]int64, len(rows))
	rawLen, envLen := 0, 2
	for _, w := range rows {
		rawLen += len(w.raw)
		envLen += len(w.envelope) + 1
	}
	raws := make([]byte, 0, rawLen)
	envs := make([]byte, 0, envLen)
	envs = append(envs, '[')
	for i, w := range rows {
		keys[i], sources[i] = w.key, w.source
		offsets[i], lengths[i] = int64(len(raws)+1), int64(len(w.raw)) // substring counts from 1
		raws = append(raws, w.raw...)
		if i > 0 {
			envs = append(envs, ',')
		}
		envs = append(envs, w.envelope...)
	}
	envs = append(envs, ']')
	stmt, err := p.insertStatement(ctx)
	if err != nil {
		return nil, err
	}
	res, err := stmt.QueryContext(ctx, pq.Array(keys), pq.Array(sources), raws, pq.Array(offsets), pq.Array(lengths), string(envs))
	if err != nil {
		return nil, err
	}
	defer res.Close()
	inserted := make(map[string]struct{}, len(rows))
	for res.Next() {
		var k string
		if err := res.Scan(&k); err != nil {
			return nil, err
		}
		inserted[k] = struct{}{}
	}
	if err := res.Err(); err != nil {
		return nil, err
	}
	// Close reports an error that arrived after the last row (the commit's).
	if err := res.Close(); err != nil {
		return nil, err
	}
	return inserted, nil
}
