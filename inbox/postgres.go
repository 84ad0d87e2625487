package inbox

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/setflow/setflow/event"
)

// NotifyChannel is the Postgres channel Put notifies so that relays wake at once
// instead of waiting for their next poll.
const NotifyChannel = "setflow_inbox"

// Postgres is the Store on PostgreSQL.
type Postgres struct {
	db *sqlx.DB
	// Concurrency bounds how many deliveries of one claimed batch run at once.
	Concurrency int

	// MaxInFlight bounds the insert statements Put runs at once, and MaxBatch
	// the entries one of them holds (see groupcommit.go);
	// DefaultMaxInFlight and DefaultMaxBatch when zero.
	MaxInFlight, MaxBatch int

	// NotifyGap is the least time between two wake-up NOTIFYs (see wake);
	// DefaultNotifyGap when zero.
	NotifyGap time.Duration

	// Wake-up hints for relays (see wake).
	notifyDirty   atomic.Bool
	notifyRunning atomic.Bool
	notifies      atomic.Int64 // NOTIFYs sent (counted as they are sent)

	commits groupCommit
}

// NewPostgres returns a Store on db (migrations must have been applied).
func NewPostgres(db *sqlx.DB) *Postgres { return &Postgres{db: db, Concurrency: 8} }

// wake makes sure a NOTIFY is sent after the commit that just happened, without
// making the caller wait for it.
//
// The NOTIFY is deliberately not part of the insert's transaction: Postgres
// holds a cluster-wide lock on the notification queue from a notifying
// transaction's pre-commit until its commit record is flushed, so notifying
// inserts commit one fsync after another and never share a WAL flush. On the
// 2-core development machine that capped the inbox at about 3,000 inserts/s
// whatever the concurrency, against about 8,000 with group commit. Durability
// is unchanged (Put still returns after the commit); only the hint moves.
//
// At most one NOTIFY is in flight; it is sent after clearing notifyDirty, so it
// covers every commit that set notifyDirty before. A commit that finds a
// sender already running leaves notifyDirty set and the sender loops once
// more. A lost hint (crash, database error) only delays the relay until its
// next poll.
//
// The first commit after a quiet spell is notified at once; later ones share
// one NOTIFY per NotifyGap. Each NOTIFY is a transaction with a commit record
// of its own to flush, and under load one per commit cost the inbox about a
// tenth of its accept rate (setflow bench); a relay that is busy claims its
// next batch without waiting for a hint anyway.
func (p *Postgres) wake() {
	p.notifyDirty.Store(true)
	if p.notifyRunning.CompareAndSwap(false, true) {
		go p.notifyLoop()
	}
}

// DefaultNotifyGap is Postgres.NotifyGap's default.
const DefaultNotifyGap = 10 * time.Millisecond

func (p *Postgres) notifyLoop() {
	gap := p.NotifyGap
	if gap <= 0 {
		gap = DefaultNotifyGap
	}
	for {
		for p.notifyDirty.Swap(false) {
			p.notifies.Add(1)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, _ = p.db.ExecContext(ctx, `SELECT pg_notify($1, '')`, NotifyChannel)
			cancel()
			time.Sleep(gap)
		}
		p.notifyRunning.Store(false)
		// A commit may have set notifyDirty after the last Swap but seen
		// notifyRunning still true: take over again rather than lose it.
		if !p.notifyDirty.Load() || !p.notifyRunning.CompareAndSwap(false, true) {
			return
		}
	}
}

type row struct {
	ID           int64           `db:"id"`
	DedupeKey    string          `db:"dedupe_key"`
	Source       string          `db:"source"`
	Raw          []byte          `db:"raw"`
	Envelope     json.RawMessage `db:"envelope"`
	Status       string          `db:"status"`
	Attempts     int             `db:"attempts"`
	ReceivedAt   time.Time       `db:"received_at"`
	DispatchedAt sql.NullTime    `db:"dispatched_at"`
	LastError    sql.NullString  `db:"last_error"`
	WorkflowID   sql.NullString  `db:"workflow_id"`
}

// rowColumns are the columns of a row; listColumns leave out the raw body.
const (
	rowColumns  = `id, dedupe_key, source, raw, envelope, status, attempts, received_at, dispatched_at, last_error, workflow_id`
	listColumns = `id, dedupe_key, source, envelope, status, attempts, received_at, dispatched_at, last_error, workflow_id`
)

// entry decodes the row; when its envelope does not decode, it returns the
// error and the entry with an envelope that holds only the key.
func (r row) entry() (Entry, error) {
	e := Entry{ID: r.ID, Raw: r.Raw, Status: Status(r.Status), Attempts: r.Attempts, ReceivedAt: r.ReceivedAt,
		DispatchedAt: r.DispatchedAt.Time, LastError: r.LastError.String, WorkflowID: r.WorkflowID.String}
	var err error
	if jerr := json.Unmarshal(r.Envelope, &e.Envelope); jerr != nil {
		e.Envelope, err = event.Envelope{}, fmt.Errorf("inbox: entry %d: decode envelope: %w", r.ID, jerr)
	}
	// The key column is the entry's identity (Put stores the envelope's key
	// there; a hand-written or placeholder row may have none in its envelope).
	e.Envelope.Key = r.DedupeKey
	return e, err
}

// view is the entry as Get and List show it: a placeholder's envelope names
// only its key (see Park), so its source is the row's, and an envelope that
// does not decode is shown as Unreadable. The relay is handed the envelope
// as stored (and parks one that does not decode).
func (r row) view() Entry {
	e, err := r.entry()
	if err != nil {
		e.Unreadable = err.Error()
	}
	if e.Envelope.Source == "" {
		e.Envelope.Source = event.Source(r.Source)
	}
	return e
}

// Get returns the entry stored under key.
func (p *Postgres) Get(ctx context.Context, key string) (Entry, error) {
	var r row
	err := p.db.GetContext(ctx, &r,
		`SELECT `+rowColumns+` FROM setflow_inbox WHERE dedupe_key = $1`, key)
	if errors.Is(err, sql.ErrNoRows) {
		return Entry{}, ErrNotFound
	}
	if err != nil {
		return Entry{}, fmt.Errorf("inbox: get: %w", err)
	}
	return r.view(), nil
}

// ReceivedAfter reports whether the entry under key was received after t. The
// time compared is the envelope's ReceivedAt (the ingress's clock, which also
// chose the key), not the row's received_at (the database's clock).
func (p *Postgres) ReceivedAfter(ctx context.Context, key string, t time.Time) (bool, error) {
	var found bool
	err := p.db.GetContext(ctx, &found, `
		SELECT EXISTS (
			SELECT 1 FROM setflow_inbox
			WHERE dedupe_key = $1 AND (envelope->>'received_at')::timestamptz > $2)`, key, t)
	if err != nil {
		return false, fmt.Errorf("inbox: received after: %w", err)
	}
	return found, nil
}

// Relay claims due rows with FOR UPDATE SKIP LOCKED inside one transaction, so
// replicas never hand the same row over twice at the same time; should a relay
// die after delivering but before committing, the row is delivered again, which
// is harmless because delivery is idempotent on the workflow id.
func (p *Postgres) Relay(ctx context.Context, limit int, deliver Deliver, backoff Backoff) (int, error) {
	tx, err := p.db.BeginTxx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("inbox: relay: begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after commit
	var rows []row
	err = tx.SelectContext(ctx, &rows, `
		SELECT `+rowColumns+` FROM setflow_inbox
		WHERE status = 'pending' AND next_attempt_at <= now()
		ORDER BY next_attempt_at, id
		LIMIT $1
		FOR UPDATE SKIP LOCKED`, limit)
	if err != nil {
		return 0, fmt.Errorf("inbox: relay: claim: %w", err)
	}
	if len(rows) == 0 {
		return 0, tx.Commit()
	}

	outcomes := p.deliverAll(ctx, rows, deliver)
	if err := recordOutcomes(ctx, tx, rows, outcomes, backoff); err != nil {
		return 0, err
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("inbox: relay: commit: %w", err)
	}
	return len(rows), nil
}

// relayOutcome is what delivering one claimed row came to.
type relayOutcome struct {
	workflowID string
	err        error
	// park: the entry can never be handed over as stored (its envelope does
	// not decode), so it is parked for an operator instead of retried.
	park bool
}

// deliverAll hands the claimed rows over, at most Concurrency at a time.
// The first failure usually means Temporal is unreachable: the rest of the
// batch is not tried (each try would wait for its own timeout while the
// transaction holds the rows) and waits for its backoff like the failed one.
func (p *Postgres) deliverAll(ctx context.Context, rows []row, deliver Deliver) []relayOutcome {
	outcomes := make([]relayOutcome, len(rows))
	sem := make(chan struct{}, max(1, p.Concurrency))
	var wg sync.WaitGroup
	dctx, giveUp := context.WithCancelCause(ctx)
	defer giveUp(nil)
	for i, r := range rows {
		e, err := r.entry()
		if err != nil {
			outcomes[i] = relayOutcome{err: err, park: true}
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if cause := context.Cause(dctx); cause != nil {
				outcomes[i].err = fmt.Errorf("not tried after an earlier failure in the batch: %w", cause)
				return
			}
			outcomes[i].workflowID, outcomes[i].err = deliver(dctx, e)
			if outcomes[i].err != nil {
				giveUp(outcomes[i].err)
			}
		}()
	}
	wg.Wait()
	return outcomes
}

// recordOutcomes marks delivered rows dispatched and schedules the failed
// ones' next attempt, in the claiming transaction.
func recordOutcomes(ctx context.Context, tx *sqlx.Tx, rows []row, outcomes []relayOutcome, backoff Backoff) error {
	var done []int64
	var ids []string
	for i, o := range outcomes {
		if o.err == nil {
			done = append(done, rows[i].ID)
			ids = append(ids, o.workflowID)
			continue
		}
		attempts := rows[i].Attempts + 1
		if o.park {
			// "relay" stands where a parked step's name does (events list -step relay).
			if _, err := tx.ExecContext(ctx, `
				UPDATE setflow_inbox SET status = 'parked', attempts = $2, last_error = $3 WHERE id = $1`,
				rows[i].ID, attempts, clip("relay: "+o.err.Error())); err != nil {
				return fmt.Errorf("inbox: relay: record failure: %w", err)
			}
			continue
		}
		wait := backoff(attempts)
		msg := clip(o.err.Error())
		if _, err := tx.ExecContext(ctx, `
			UPDATE setflow_inbox
			SET attempts = $2, last_error = $3, next_attempt_at = now() + $4 * interval '1 millisecond'
			WHERE id = $1`, rows[i].ID, attempts, msg, wait.Milliseconds()); err != nil {
			return fmt.Errorf("inbox: relay: record failure: %w", err)
		}
	}
	if len(done) == 0 {
		return nil
	}
	if _, err := tx.ExecContext(ctx, `
		UPDATE setflow_inbox AS i
		SET status = 'dispatched', dispatched_at = now(), attempts = i.attempts + 1,
		    workflow_id = d.workflow_id, last_error = NULL
		FROM unnest($1::bigint[], $2::text[]) AS d(id, workflow_id)
		WHERE i.id = d.id`, pq.Array(done), pq.Array(ids)); err != nil {
		return fmt.Errorf("inbox: relay: record success: %w", err)
	}
	return nil
}

// Listen returns a channel that receives a value whenever Put commits a new
// entry, and a stop function. Notifications are only a hint: relays still poll.
func Listen(databaseURL string) (<-chan struct{}, func(), error) {
	l := pq.NewListener(databaseURL, time.Second, time.Minute, nil)
	if err := l.Listen(NotifyChannel); err != nil {
		l.Close()
		return nil, nil, fmt.Errorf("inbox: listen: %w", err)
	}
	out := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case <-l.Notify:
				select {
				case out <- struct{}{}:
				default:
				}
			}
		}
	}()
	return out, func() { close(done); l.Close() }, nil
}

// pruneBatch is how many old dispatched entries one round of Prune looks at.
const pruneBatch = 1000

// Prune deletes the dispatched entries older than retention whose work is
// finished, in batches so that a large backlog never holds a long lock.
// Entries still pending or parked are kept whatever their age, and so is an
// unfinished one, listed and retryable however old. The retention must exceed
// the ingress's replay window (SETFLOW_SET_MAX_AGE): an entry is also the
// dedupe record of its key.
func (p *Postgres) Prune(ctx context.Context, retention time.Duration, finished Finished) (int64, error) {
	var total, after int64
	for {
		var old []row
		if err := p.db.SelectContext(ctx, &old, `
			SELECT id, dedupe_key, envelope FROM setflow_inbox
			WHERE status = 'dispatched' AND dispatched_at < now() - $1 * interval '1 millisecond' AND id > $2
			ORDER BY id LIMIT $3`, retention.Milliseconds(), after, pruneBatch); err != nil {
			return total, fmt.Errorf("inbox: prune: %w", err)
		}
		if len(old) == 0 {
			return total, nil
		}
		// An envelope that does not decode cannot be judged finished: it is
		// kept for an operator to look at, and the others go on.
		envs := make([]event.Envelope, 0, len(old))
		ids := make([]int64, 0, len(old))
		for _, r := range old {
			if e, err := r.entry(); err == nil {
				envs = append(envs, e.Envelope)
				ids = append(ids, r.ID)
			}
		}
		done, err := finished(ctx, envs)
		if err != nil {
			return total, fmt.Errorf("inbox: prune: %w", err)
		}
		var prune []int64
		for i, env := range envs {
			if done[env.Key] {
				prune = append(prune, ids[i])
			}
		}
		if len(prune) > 0 {
			// Still dispatched: an operator may have parked it since.
			res, err := p.db.ExecContext(ctx, `DELETE FROM setflow_inbox WHERE id = ANY($1) AND status = 'dispatched'`, pq.Array(prune))
			if err != nil {
				return total, fmt.Errorf("inbox: prune: %w", err)
			}
			n, _ := res.RowsAffected()
			total += n
		}
		if len(old) < pruneBatch {
			return total, nil
		}
		after = old[len(old)-1].ID
	}
}
