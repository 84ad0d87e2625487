package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"

	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/inbox"
	"github.com/setflow/setflow/ingress"
	"github.com/setflow/setflow/internal/devserver"
	"github.com/setflow/setflow/internal/reactionbench"
	"github.com/setflow/setflow/relay"
)

// benchBareInsert measures what the inbox would do without group commit: each
// of `clients` connections inserting one row per transaction (the statement a
// Put ran on its own before group commit, same row size) for d. It returns
// the rate and the latencies; its table is dropped afterwards.
func benchBareInsert(ctx context.Context, db *sqlx.DB, env event.Envelope, tokens [][]byte, prefix string, clients int, d time.Duration) (*benchResult, error) {
	envJSON, err := json.Marshal(env)
	if err != nil {
		return nil, err
	}
	keyPrefix := "bare:" + prefix
	// A scratch table shaped like the inbox (columns, defaults, constraints,
	// indexes): the inbox's own rows are written only by inbox.
	table := "setflow_bench_bare_inbox_" + randomHex(4)
	if _, err := db.ExecContext(ctx, `CREATE TABLE `+table+` (LIKE setflow_inbox INCLUDING ALL)`); err != nil {
		return nil, fmt.Errorf("bare insert: %w", err)
	}
	defer func() { _, _ = db.ExecContext(context.WithoutCancel(ctx), `DROP TABLE IF EXISTS `+table) }()
	var next atomic.Int64
	total, err := closedLoop(ctx, clients, d, func() error {
		i := next.Add(1) - 1
		var id int64
		return db.QueryRowContext(ctx, `
			INSERT INTO `+table+` (dedupe_key, source, raw, envelope)
			VALUES ($1, $2, $3, $4)
			ON CONFLICT (dedupe_key) DO NOTHING
			RETURNING id`,
			fmt.Sprint(keyPrefix, i), string(env.Source), tokens[int(i)%len(tokens)], envJSON).Scan(&id)
	})
	if err != nil {
		return nil, fmt.Errorf("bare insert: %w", err)
	}
	return total, nil
}

// closedLoop runs op on `workers` goroutines, each calling it again as soon
// as it returns, until d has passed; an op that starts before then runs to
// its end (it is never cut off, so what it did is counted). It records each
// op's latency; the first error ends its worker and is returned.
func closedLoop(ctx context.Context, workers int, d time.Duration, op func() error) (*benchResult, error) {
	results := make([]benchResult, workers)
	var firstErr error
	var once sync.Once
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				t0 := time.Now()
				if t0.After(deadline) {
					return
				}
				if err := op(); err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				results[w].record(0, 0, nil, time.Since(t0))
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	total := &benchResult{elapsed: time.Since(start)}
	for i := range results {
		total.merge(&results[i])
	}
	return total, ctx.Err()
}

// relayBenchConfig is the relay phase's setup.
type relayBenchConfig struct {
	bin         string
	listenURL   string
	burst       time.Duration
	rate        float64 // 0: closed loop at clients
	clients     int
	concurrency int // relay's concurrent starts; 0: the inbox's default
	drainLimit  time.Duration
	acceptRate  float64        // of the closed-loop accept run, for the ratio
	baseline    time.Duration  // of the direct-start run; 0 skips it
	sample      event.Envelope // a verified SET's envelope, for the direct starts
}

// benchRelay runs a relay against a fresh Temporal dev server while the
// ingress takes a burst, then waits for the backlog to drain and checks that
// every accepted SET was started as its user's workflow.
func benchRelay(ctx context.Context, out io.Writer, db *sqlx.DB, url string, tokens [][]byte, prefix string, cfg relayBenchConfig) error {
	if _, err := os.Stat(cfg.bin); err != nil {
		return fmt.Errorf("relay phase: temporal CLI %s: %w (deployments/local/test.sh builds .bin/temporal; set SETFLOW_TEMPORAL_BIN, or -relay-burst 0 to skip the phase)", cfg.bin, err)
	}
	if err := resetBenchRows(ctx, db, prefix); err != nil {
		return err
	}
	srv, _, stopServer, err := startBenchServer(ctx, cfg.bin)
	if err != nil {
		return err
	}
	defer stopServer()
	c, err := srv.Dial(ctx, devserver.Quiet{})
	if err != nil {
		return err
	}
	defer c.Close()
	starts, in, stop, err := startBenchRelay(ctx, db, c, cfg)
	if err != nil {
		return err
	}
	defer stop()

	// The direct starts run as many at once as the relay does.
	cfg.concurrency = in.Concurrency
	var r relayRun
	if r.direct, err = directStartRate(ctx, c, cfg.sample, cfg.concurrency, cfg.baseline); err != nil {
		return err
	}
	load := fmt.Sprintf("%d clients, closed loop", cfg.clients)
	if cfg.rate > 0 {
		load = fmt.Sprintf("fixed %s SETs/s, open loop", thousands(cfg.rate))
	}
	fmt.Fprintf(out, "\nrelay (Temporal dev server %s, SQLite WAL; relay batch 100, %d concurrent starts;\n"+
		"workflows started, no worker): burst of %s into the ingress (%s) with the relay running, then the backlog drains\n",
		srv.HostPort(), in.Concurrency, cfg.burst, load)
	start := time.Now()
	if cfg.rate > 0 {
		n := min(int(cfg.rate*cfg.burst.Seconds()), len(tokens))
		r.burst, err = benchFixedRate(ctx, url, tokens[:n], cfg.rate)
	} else {
		r.burst, err = benchAccept(ctx, url, tokens, cfg.clients, cfg.burst)
	}
	if err != nil {
		return err
	}
	r.burstEnd = time.Since(start)
	// Started by the end of the burst (the relay records a claimed batch as
	// dispatched only once all of it is started).
	r.atEnd = int(starts.n.Load())
	if r.rows, err = countBenchRows(ctx, db, prefix); err != nil {
		return err
	}
	if r.dispatched, err = waitDispatched(ctx, db, prefix, r.rows, cfg.drainLimit, func() int { return int(starts.n.Load()) }); err != nil {
		return err
	}
	r.total = time.Since(start)
	r.drainedStarts = int(starts.n.Load()) - r.atEnd
	r.failedStarts = int(starts.failed.Load())
	// Again on the fuller server, which the drain ended on.
	if r.directAfter, err = directStartRate(ctx, c, cfg.sample, cfg.concurrency, cfg.baseline); err != nil {
		return err
	}
	return r.report(ctx, out, c, cfg)
}

// directStartRate measures what the Temporal server takes without the inbox
// in front: the relay's own Deliver on fresh users' events, `concurrency` at
// a time, for d. The relay keeps up when it drains its backlog at about this
// rate: what it cannot pass on is then the server's limit, not its own.
func directStartRate(ctx context.Context, c client.Client, sample event.Envelope, concurrency int, d time.Duration) (*benchResult, error) {
	if d <= 0 {
		return nil, nil
	}
	r := &relay.Relay{Temporal: c, Subjects: reactionbench.Subjects, Log: slog.New(slog.DiscardHandler)}
	prefix := "direct-" + randomHex(4) + "-"
	var next atomic.Int64
	total, err := closedLoop(ctx, concurrency, d, func() error {
		_, err := r.Deliver(ctx, inbox.Entry{Envelope: withUser(sample, fmt.Sprint(prefix, next.Add(1)))})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("direct starts: %w", err)
	}
	return total, nil
}

// withUser is env as an event about user (its key too), so that each direct
// start is a new user's stream.
func withUser(env event.Envelope, user string) event.Envelope {
	env.Key = user
	env.Subject.UserID = user
	env.Events = slices.Clone(env.Events)
	for i := range env.Events {
		if env.Events[i].Subject.UserID != "" {
			env.Events[i].Subject.UserID = user
		}
	}
	return env
}

// startBenchRelay runs a relay from the bench's inbox rows to c until stop;
// starts counts the user streams it started.
func startBenchRelay(ctx context.Context, db *sqlx.DB, c client.Client, cfg relayBenchConfig) (starts *countingStarter, in *inbox.Postgres, stop func(), err error) {
	wake, stopWake, err := inbox.Listen(cfg.listenURL)
	if err != nil {
		return nil, nil, nil, err
	}
	in = inbox.NewPostgres(db)
	if cfg.concurrency > 0 {
		in.Concurrency = cfg.concurrency
	}
	starts = &countingStarter{Starter: c}
	r := &relay.Relay{Inbox: in, Temporal: starts, Subjects: reactionbench.Subjects, Log: slog.New(slog.DiscardHandler),
		Poll: 200 * time.Millisecond, Wake: wake}
	rctx, stopRelay := context.WithCancel(ctx)
	relayDone := make(chan struct{})
	go func() { defer close(relayDone); _ = r.Run(rctx) }()
	return starts, in, func() { stopRelay(); <-relayDone; stopWake() }, nil
}

// waitDispatched waits until the bench's rows are all dispatched or limit
// has passed, and returns how many are. The count is a scan of the inbox
// table: polled every 50 ms through a long drain it took enough of the
// machine to slow the relay it measured (a 12,000-row drain fell from 87 to
// 42 starts/s). So it waits on the relay's own count of starts and counts
// in the database only every few seconds, and often once the starts are
// all in (the relay records a batch as dispatched just after its starts).
func waitDispatched(ctx context.Context, db *sqlx.DB, prefix string, rows int, limit time.Duration, started func() int) (int, error) {
	deadline := time.Now().Add(limit)
	var dispatched int
	var counted time.Time
	for {
		if started() >= rows || time.Since(counted) >= 5*time.Second {
			var err error
			if dispatched, err = countDispatched(ctx, db, prefix); err != nil {
				return 0, err
			}
			counted = time.Now()
		}
		if dispatched >= rows || time.Now().After(deadline) {
			return dispatched, nil
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// relayRun is what the relay phase measured.
type relayRun struct {
	burst           *benchResult
	burstEnd, total time.Duration // from the burst's start to its end, and to the drain's
	atEnd           int           // user streams started by the end of the burst
	rows            int           // inbox rows committed by the burst
	dispatched      int           // of those rows, after the drain
	drainedStarts   int           // user streams started after the burst's end
	failedStarts    int           // start calls that failed (the entry waited for its backoff)
	direct          *benchResult  // the direct-start runs before the burst and after the drain (nil if skipped)
	directAfter     *benchResult
}

// report prints the phase's figures and fails unless the backlog drained
// and no accepted SET was lost.
func (r relayRun) report(ctx context.Context, out io.Writer, c client.Client, cfg relayBenchConfig) error {
	burst := r.burst
	relayRate := float64(r.dispatched) / r.total.Seconds()
	fmt.Fprintf(out, "  %-24s %9s SETs/s  (%d in %s; errors %d %s)\n", "accepted (202)", thousands(burst.perSec()),
		burst.accepted, burst.elapsed.Round(time.Millisecond), burst.errors, burst.errorDetail())
	fmt.Fprintf(out, "  %-24s %9s rows/s  (%d started by the end of the burst) = %.1f%% of the burst's accept rate\n", "relayed during burst",
		thousands(float64(r.atEnd)/r.burstEnd.Seconds()), r.atEnd, 100*float64(r.atEnd)/r.burstEnd.Seconds()/max(burst.perSec(), 1))
	fmt.Fprintf(out, "  %-24s %9d rows\n", "backlog at burst end", max(r.rows-r.atEnd, 0))
	fmt.Fprintf(out, "  %-24s %9d (each failure holds the rest of its batch back for the backoff)\n", "failed starts", r.failedStarts)
	if r.dispatched < r.rows {
		fmt.Fprintf(out, "  %-24s NOT DRAINED: %d of %d rows dispatched after %s\n", "drain", r.dispatched, r.rows, r.total.Round(time.Millisecond))
		return fmt.Errorf("relay phase: backlog not drained within %s", cfg.drainLimit)
	}
	drain := r.total - r.burstEnd
	fmt.Fprintf(out, "  %-24s %9s       (burst end to last row dispatched)\n", "drained in", drain.Round(time.Millisecond))
	fmt.Fprintf(out, "  %-24s %9s rows/s  (%d rows in %s) = %.1f%% of the closed-loop accept rate (%s/s)\n", "relay throughput",
		thousands(relayRate), r.dispatched, r.total.Round(time.Millisecond), 100*relayRate/max(cfg.acceptRate, 1), thousands(cfg.acceptRate))
	if r.direct != nil {
		// After the burst the ingress is idle: the drain is the relay alone
		// against the server, as the direct starts were.
		drainRate := float64(r.drainedStarts) / max(drain.Seconds(), 1e-3)
		directRate := (r.direct.perSec() + r.directAfter.perSec()) / 2
		fmt.Fprintf(out, "  %-24s %9s starts/s  (mean of %s/s before the burst and %s/s after the drain: the relay's Deliver\n"+
			"  %-24s                    without the inbox, %d at a time, %s each; after: %s)\n", "server's direct rate",
			thousands(directRate), thousands(r.direct.perSec()), thousands(r.directAfter.perSec()), "", cfg.concurrency,
			r.direct.elapsed.Round(time.Millisecond), r.directAfter.latencies())
		fmt.Fprintf(out, "  %-24s %9s starts/s  (%d after the burst) = %.2f× the direct rate   target ≥ %.1f×\n", "relay drain rate",
			thousands(drainRate), r.drainedStarts, drainRate/max(directRate, 1e-3), benchTargetRelayShare)
	}
	// No loss: every 202 has its row, every row was dispatched, and every
	// dispatched row is a workflow on the server (each SET names its own user).
	direct := 0
	if r.direct != nil {
		direct = r.direct.accepted + r.directAfter.accepted
	}
	started, err := countUserStreams(ctx, c, int64(r.rows+direct))
	if err != nil {
		return err
	}
	started -= int64(direct)
	ok := r.rows >= burst.accepted && r.dispatched == r.rows && started == int64(r.rows)
	fmt.Fprintf(out, "  %-24s %d accepted, %d rows, %d dispatched, %d user streams started on the server: %s\n", "loss check",
		burst.accepted, r.rows, r.dispatched, started, map[bool]string{true: "ok, none lost", false: "LOST"}[ok])
	if !ok {
		return fmt.Errorf("relay phase: accepted events lost")
	}
	return nil
}

// countingStarter counts the user streams the relay signalled (and started).
type countingStarter struct {
	relay.Starter
	n, failed atomic.Int64
}

func (c *countingStarter) SignalWithStartWorkflow(ctx context.Context, workflowID, signalName string, signalArg any,
	options client.StartWorkflowOptions, workflow any, workflowArgs ...any) (client.WorkflowRun, error) {
	run, err := c.Starter.SignalWithStartWorkflow(ctx, workflowID, signalName, signalArg, options, workflow, workflowArgs...)
	if err == nil {
		c.n.Add(1)
	} else {
		c.failed.Add(1)
	}
	return run, err
}

func countDispatched(ctx context.Context, db *sqlx.DB, prefix string) (int, error) {
	return inbox.NewPostgres(db).CountKeys(ctx, ingress.SETKey(prefix), inbox.StatusDispatched)
}

// countUserStreams counts the UserStream workflows on the server, waiting up
// to 30 s for the visibility store to catch up to want.
func countUserStreams(ctx context.Context, c interface {
	CountWorkflow(context.Context, *workflowservice.CountWorkflowExecutionsRequest) (*workflowservice.CountWorkflowExecutionsResponse, error)
}, want int64) (int64, error) {
	var n int64
	for deadline := time.Now().Add(30 * time.Second); ; {
		resp, err := c.CountWorkflow(ctx, &workflowservice.CountWorkflowExecutionsRequest{Query: "WorkflowType = 'UserStream'"})
		if err != nil {
			return 0, fmt.Errorf("count workflows: %w", err)
		}
		n = resp.GetCount()
		if n >= want || time.Now().After(deadline) {
			return n, nil
		}
		select {
		case <-ctx.Done():
			return n, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
