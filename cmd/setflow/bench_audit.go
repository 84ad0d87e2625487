package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/setflow/setflow/audit"
	"github.com/setflow/setflow/audit/auditdb"
)

// Targets of issue 16: appends scale with writers and stay close to what the
// server commits anyway.
const (
	benchAuditTargetScale = 5.0 // 32-writer rate ≥ 5× the 1-writer rate
	benchAuditTargetBare  = 0.5 // 32-writer rate ≥ 50% of bare inserts at 32 clients
)

// runBenchAudit measures auditdb.Store.Append at 1, 8 and 32 concurrent
// writers (each its own user, so its own chain) and, in the same run and on
// the same server, a bare single-row INSERT that commits alone at the
// largest writer count: the ceiling any audit append could reach.
func runBenchAudit(ctx context.Context, args []string) error {
	o, err := parseBenchAuditOptions(args)
	if err != nil {
		return err
	}
	db, dbName, cleanup, err := benchDatabase(ctx, o.dbURL, o.top+4)
	if err != nil {
		return err
	}
	defer cleanup()
	b := &auditBench{opts: o, db: db, run: "bench-audit-" + randomHex(4),
		log: auditdb.NewStore(db), hasher: audit.SubjectHasher{Key: []byte("setflow-bench-audit-key")}}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = b.log.DeleteEvents(dctx, b.run)
		_, _ = db.ExecContext(dctx, `DROP TABLE IF EXISTS setflow_bench_bare_insert`)
	}()
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS setflow_bench_bare_insert (
		id bigserial PRIMARY KEY, event_key text NOT NULL, step text NOT NULL, detail jsonb NOT NULL, hash text NOT NULL)`); err != nil {
		return err
	}
	pgVersion, syncCommit := benchPostgresSettings(ctx, db)
	out := os.Stdout
	fmt.Fprintf(out, "setflow bench audit: %s, GOMAXPROCS=%d, %d CPUs, PostgreSQL %s (synchronous_commit=%s), database %s, %s per phase, %d round(s)\n\n",
		runtime.Version(), runtime.GOMAXPROCS(0), runtime.NumCPU(), pgVersion, syncCommit, dbName, o.duration, o.rounds)
	if err := warmDB(ctx, db, o.top+4); err != nil {
		return err
	}
	bare, appends, err := b.measure(ctx)
	if err != nil {
		return err
	}
	start := time.Now()
	cp, _, err := b.log.Checkpoint(ctx)
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	cpTime := time.Since(start)
	if _, err := b.log.VerifyChain(ctx, audit.UserChain(b.hasher.Hash(b.run, fmt.Sprintf("w%d-0", o.top))), audit.VerifyOptions{}); err != nil {
		return fmt.Errorf("verify a bench chain: %w", err)
	}
	b.report(out, bare, appends)
	fmt.Fprintf(out, "  %-34s %9s   (%d chains, after the run)\n\n", "checkpoint", ms(cpTime), cp.Chains)
	return nil
}

// benchAuditOptions are setflow bench audit's flags, parsed and checked once.
type benchAuditOptions struct {
	dbURL    string
	duration time.Duration // of each measured phase
	writers  []int
	top      int // the largest writer count, where the bare inserts run
	rounds   int
}

func parseBenchAuditOptions(args []string) (benchAuditOptions, error) {
	var o benchAuditOptions
	fs := flag.NewFlagSet("setflow bench audit", flag.ContinueOnError)
	fs.StringVar(&o.dbURL, "database-url", "", "use this database as is (migrated; the bench's audit rows, keys prefixed bench-audit-, are deleted at the end).\n"+
		"Default: a throw-away database on the server of SETFLOW_DATABASE_URL, dropped at the end")
	fs.DurationVar(&o.duration, "duration", 5*time.Second, "length of each measured phase")
	writersFlag := fs.String("writers", "1,8,32", "comma-separated concurrent writer counts; the bare-insert baseline runs at the largest")
	fs.IntVar(&o.rounds, "rounds", 1, "measured rounds (each runs every phase; figures are over all rounds)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: setflow bench audit [flags]\n\n"+
			"Measures audit appends per second at each writer count (distinct users: one chain each)\n"+
			"next to a bare single-row insert-and-commit rate on the same server in the same run.\n"+
			"Targets: the largest writer count ≥ %.0f× one writer, and ≥ %.0f%% of the bare rate.\n\nflags:\n",
			benchAuditTargetScale, benchAuditTargetBare*100)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	for _, s := range strings.Split(*writersFlag, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			return o, fmt.Errorf("-writers %q: want positive counts like 1,8,32", *writersFlag)
		}
		o.writers = append(o.writers, n)
		o.top = max(o.top, n)
	}
	if o.duration <= 0 || o.rounds <= 0 || fs.NArg() > 0 {
		return o, errors.New("-duration and -rounds must be positive; no arguments")
	}
	return o, nil
}

// auditBench is one setflow bench audit run.
type auditBench struct {
	opts   benchAuditOptions
	db     *sqlx.DB
	run    string // the event keys' prefix, and the bare rows' hash
	log    *auditdb.Store
	hasher audit.SubjectHasher
}

// measure runs every round: the bare inserts at the largest writer count,
// then the appends at each writer count.
func (b *auditBench) measure(ctx context.Context) (bare *benchCount, appends map[int]*benchCount, err error) {
	o := b.opts
	appends = map[int]*benchCount{}
	for _, w := range o.writers {
		appends[w] = &benchCount{}
	}
	bare = &benchCount{}
	// Prepared like the audit's own insert, so that both pay the same
	// round trips and only the chaining differs.
	bareInsert, err := b.db.PrepareContext(ctx, `INSERT INTO setflow_bench_bare_insert (event_key, step, detail, hash) VALUES ($1, $2, $3, $4)`)
	if err != nil {
		return nil, nil, err
	}
	defer bareInsert.Close()
	var seq atomic.Int64
	for range o.rounds {
		n, err := benchWriters(ctx, o.top, o.duration, func(ctx context.Context, g int) error {
			_, err := bareInsert.ExecContext(ctx, fmt.Sprintf("%s-bare-%d", b.run, seq.Add(1)), "bench/received", `{"n":1}`, b.run)
			return err
		})
		if err != nil {
			return nil, nil, fmt.Errorf("bare insert: %w", err)
		}
		bare.add(n, o.duration)
		for _, w := range o.writers {
			n, err := benchWriters(ctx, w, o.duration, func(ctx context.Context, g int) error {
				i := seq.Add(1)
				_, err := b.log.Append(ctx, audit.Record{EventKey: fmt.Sprintf("%s-%d", b.run, i), EventType: "bench",
					SubjectHash: b.hasher.Hash(b.run, fmt.Sprintf("w%d-%d", w, g)), Step: "bench/received", Outcome: "done",
					Detail: map[string]any{"n": 1}})
				return err
			})
			if err != nil {
				return nil, nil, fmt.Errorf("append with %d writers: %w", w, err)
			}
			appends[w].add(n, o.duration)
		}
	}
	return bare, appends, nil
}

// report prints each phase's rate and the two targets.
func (b *auditBench) report(out io.Writer, bare *benchCount, appends map[int]*benchCount) {
	writers, top := b.opts.writers, b.opts.top
	fmt.Fprintf(out, "  %-34s %9s\n", "phase", "rows/s")
	fmt.Fprintf(out, "  %-34s %9s\n", fmt.Sprintf("bare insert+commit, %d clients", top), thousands(bare.rate()))
	for _, w := range writers {
		fmt.Fprintf(out, "  %-34s %9s\n", fmt.Sprintf("audit append, %d writer(s)", w), thousands(appends[w].rate()))
	}
	one, most := appends[writers[0]].rate(), appends[top].rate()
	fmt.Fprintln(out)
	if writers[0] == 1 && top > 1 {
		scale := most / one
		fmt.Fprintf(out, "  %-34s %8.1f×   target ≥ %.0f× %s\n", fmt.Sprintf("%d writers / 1 writer", top), scale, benchAuditTargetScale, meets(scale >= benchAuditTargetScale))
	}
	share := most / bare.rate()
	fmt.Fprintf(out, "  %-34s %8.0f%%   target ≥ %.0f%% %s\n", fmt.Sprintf("%d writers / bare insert", top), share*100, benchAuditTargetBare*100, meets(share >= benchAuditTargetBare))
}

// benchCount sums operations and time over rounds.
type benchCount struct {
	n int64
	d time.Duration
}

func (c *benchCount) add(n int64, d time.Duration) { c.n += n; c.d += d }

func (c *benchCount) rate() float64 {
	if c.d <= 0 {
		return 0
	}
	return float64(c.n) / c.d.Seconds()
}

// benchWriters runs op in g goroutines for d (closed loop) and counts the
// operations that succeeded; the first error ends the phase.
func benchWriters(ctx context.Context, g int, d time.Duration, op func(ctx context.Context, writer int) error) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var n atomic.Int64
	var wg sync.WaitGroup
	var firstErr error
	var once sync.Once
	for w := 0; w < g; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if err := op(ctx, w); err != nil {
					if ctx.Err() == nil {
						once.Do(func() { firstErr = err; cancel() })
					}
					return
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	return n.Load(), firstErr
}

func meets(ok bool) string {
	if ok {
		return "ok"
	}
	return "BELOW TARGET"
}
