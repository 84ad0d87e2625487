package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	sdkworker "go.temporal.io/sdk/worker"

	"github.com/setflow/setflow/config"
	"github.com/setflow/setflow/internal/devserver"
	"github.com/setflow/setflow/internal/pgurl"
	"github.com/setflow/setflow/internal/reactionbench"
)

// runBenchReactions compares full reactions with the product's no-op baseline
// on one Temporal dev server (SQLite in WAL mode) in the same run.
func runBenchReactions(ctx context.Context, args []string) error {
	o, err := parseBenchReactionsOptions(args)
	if err != nil {
		return err
	}
	db, dbName, cleanup, err := benchDatabase(ctx, o.dbURL, o.dbPool)
	if err != nil {
		return err
	}
	defer cleanup()
	pgVersion, _ := benchPostgresSettings(ctx, db)

	start := time.Now()
	srv, dir, stopServer, err := startBenchServer(ctx, o.temporalBin, o.dynConfig...)
	if err != nil {
		return err
	}
	defer stopServer()
	out := os.Stdout
	fmt.Fprintf(out, "setflow bench reactions: %s, GOMAXPROCS=%d, %d CPUs, PostgreSQL %s, database %s\n",
		runtime.Version(), runtime.GOMAXPROCS(0), runtime.NumCPU(), pgVersion, dbName)
	fmt.Fprintf(out, "Temporal dev server %s (SQLite %s, pragmas %s) ready in %s\n", srv.HostPort(), dir+"/temporal.db",
		strings.Join(reactionbench.Pragmas, ","), time.Since(start).Round(10*time.Millisecond))
	if len(o.dynConfig) > 0 {
		fmt.Fprintf(out, "dynamic config (both runs): %s\n", strings.Join(o.dynConfig, " "))
	}

	reactionbench.Diagnostics = os.Stderr
	wopts := sdkworker.Options{MaxConcurrentWorkflowTaskPollers: o.wfPollers, MaxConcurrentActivityTaskPollers: o.actPollers}
	base, err := reactionbench.NewBaseline(ctx, srv, wopts)
	if err != nil {
		return err
	}
	defer base.Close()
	listenURL, err := benchListenURL(ctx, db, o.dbURL)
	if err != nil {
		return err
	}
	sf, err := reactionbench.NewSetflow(ctx, srv, reactionbench.Config{DB: db, DBURL: listenURL, Worker: wopts,
		RelayBatch: o.relayBatch, RelayConcurrency: o.relayConc})
	if err != nil {
		return err
	}
	defer sf.Close()

	b := &reactionsBench{opts: o, out: out, srv: srv, base: base, sf: sf, run: randomHex(4)}
	if err := b.throughput(ctx); err != nil {
		return err
	}
	if err := b.timeToRevoke(ctx); err != nil {
		return err
	}
	fmt.Fprintln(out)
	return nil
}

// benchReactionsOptions are setflow bench reactions' flags, parsed and
// checked once.
type benchReactionsOptions struct {
	n, warmup, rounds     int
	temporalBin           string
	dbURL                 string
	dbPool                int
	relayBatch, relayConc int
	wfPollers, actPollers int
	revokeRate            float64
	revokeDur             time.Duration
	dynConfig             stringList
}

func parseBenchReactionsOptions(args []string) (benchReactionsOptions, error) {
	var o benchReactionsOptions
	fs := flag.NewFlagSet("setflow bench reactions", flag.ContinueOnError)
	fs.IntVar(&o.n, "n", 150, "workflows per measured batch: no-op workflows for the baseline, events for setflow")
	fs.IntVar(&o.warmup, "warmup", 20, "workflows of each kind run first and not measured")
	fs.IntVar(&o.rounds, "rounds", 3, "measured rounds, each running both kinds (alternating which goes first); figures are over all rounds")
	var bc config.Bench
	bc.Register(fs)
	fs.StringVar(&o.dbURL, "database-url", "", "use this database as is (migrated; the bench's rows, keys and users prefixed bench-, stay).\n"+
		"Default: a throw-away database on the server of SETFLOW_DATABASE_URL, dropped at the end.\n"+
		"Never point it at a database a relay is serving")
	fs.IntVar(&o.dbPool, "db-pool", 32, "maximum open Postgres connections of the in-process ingress, relay and worker")
	fs.IntVar(&o.relayBatch, "relay-batch", 0, "entries one relay claim takes (0: the relay's default, 100)")
	fs.IntVar(&o.relayConc, "relay-concurrency", 0, "concurrent workflow starts of one relay batch (0: the inbox's default, 8)")
	fs.IntVar(&o.wfPollers, "workflow-pollers", 0, "workflow task pollers per worker (0: the SDK's default), for both workers")
	fs.IntVar(&o.actPollers, "activity-pollers", 0, "activity task pollers per worker (0: the SDK's default), for both workers")
	fs.Float64Var(&o.revokeRate, "revoke-rate", 5, "revoking SETs/s of the time-to-revoke phase (fixed rate, open loop); 0 skips it")
	fs.DurationVar(&o.revokeDur, "revoke-duration", 20*time.Second, "length of the time-to-revoke phase")
	fs.Var(&o.dynConfig, "dynamic-config", "dev server dynamic config value KEY=JSON (repeatable), for what-if runs; applies to both\n"+
		"the baseline and setflow, e.g. system.enableActivityEagerExecution=true")
	fs.Usage = func() { benchReactionsUsage(fs) }
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	o.temporalBin = bc.TemporalBin
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if o.n <= 0 || o.warmup < 0 || o.rounds <= 0 || o.dbPool <= 0 || o.revokeRate < 0 || (o.revokeRate > 0 && o.revokeDur <= 0) {
		return o, errors.New("-n, -rounds and -db-pool must be positive, -warmup and -revoke-rate not negative, -revoke-duration positive")
	}
	if _, err := os.Stat(o.temporalBin); err != nil {
		return o, fmt.Errorf("temporal CLI %s: %w (deployments/local/test.sh builds .bin/temporal; or set SETFLOW_TEMPORAL_BIN)", o.temporalBin, err)
	}
	return o, nil
}

func benchReactionsUsage(fs *flag.FlagSet) {
	fmt.Fprintf(fs.Output(), "usage: setflow bench reactions [flags]\n\n"+
		"Starts a Temporal dev server with SQLite in WAL mode and measures on it, in the same run:\n"+
		"  baseline: no-op workflows of %d no-op activities on their own task queue (completed/s);\n"+
		"  setflow:  events (account-disabled, credential-change) for distinct users POSTed to the\n"+
		"            in-process ingress, stored in the Postgres inbox, relayed to each user's stream\n"+
		"            (the UserStream workflow, Signal-With-Start), which applies the event to the\n"+
		"            user's state and runs its steps as the real activities of the production worker\n"+
		"            set on Postgres (sessions, user state, profile store, audit chain; no email,\n"+
		"            CRM or Kakao API), from the first POST to the last reaction's \"completed\"\n"+
		"            audit row (streams outlive their events, so workflows do not complete).\n"+
		"The target (product.md, \"Numbers to beat\") is setflow ≥ %.1f× the baseline.\n"+
		"Then, at a fixed rate (-revoke-rate for -revoke-duration, open loop), revoking SETs\n"+
		"(%s in turn) for distinct users, each with a session\n"+
		"from before the event: time to revoke, from each SET's 202 to its session row's\n"+
		"revoked_at (set by Postgres's now() in the revoking transaction; the 202 times are\n"+
		"moved to Postgres's clock), p50/p99/max.\n\nflags:\n",
		reactionbench.NoopActivities, reactionbench.Target, strings.Join(reactionbench.RevokeEventTypes, ", "))
	fs.PrintDefaults()
}

// reactionsBench is one setflow bench reactions run on its dev server.
type reactionsBench struct {
	opts benchReactionsOptions
	out  io.Writer
	srv  *devserver.Server
	base *reactionbench.Baseline
	sf   *reactionbench.Setflow
	run  string // in every workflow id and event key of the run
}

// throughput runs the warm-up, then the measured rounds of both kinds, and
// reports the totals.
func (b *reactionsBench) throughput(ctx context.Context) error {
	o, out := b.opts, b.out
	if o.warmup > 0 {
		if _, err := b.base.Run(ctx, o.warmup, "bench-noop-"+b.run+"-warm-"); err != nil {
			return fmt.Errorf("baseline warm-up: %w", err)
		}
		if _, err := b.sf.Run(ctx, o.warmup, "bench-"+b.run+"-warm-"); err != nil {
			return fmt.Errorf("setflow warm-up: %w", err)
		}
	}
	var baseTotal, sfTotal reactionbench.Result
	for r := range o.rounds {
		base, sf, err := b.round(ctx, r)
		if err != nil {
			return err
		}
		if o.rounds > 1 {
			fmt.Fprintf(out, "round %d: baseline %.1f/s, setflow %.1f/s, ratio %.2f×\n", r+1, base.PerSec(), sf.PerSec(), reactionbench.Ratio(base, sf))
		}
		baseTotal.Add(base)
		sfTotal.Add(sf)
	}
	fmt.Fprintf(out, "\nreaction throughput (%d workflows of each kind per round, %d round(s), warm-up %d)\n", o.n, o.rounds, o.warmup)
	reactionbench.Report(out, baseTotal, sfTotal)
	return nil
}

// round measures both kinds once. Rounds alternate which kind goes first,
// so that a slow spell on a shared machine hurts both alike.
func (b *reactionsBench) round(ctx context.Context, r int) (base, sf reactionbench.Result, err error) {
	runBase := func() (err error) {
		base, err = reactionbench.Measure(b.srv, func() (reactionbench.Result, error) {
			return b.base.Run(ctx, b.opts.n, fmt.Sprintf("bench-noop-%s-r%d-", b.run, r))
		})
		if err != nil {
			err = fmt.Errorf("baseline: %w", err)
		}
		return err
	}
	runSetflow := func() (err error) {
		sf, err = reactionbench.Measure(b.srv, func() (reactionbench.Result, error) {
			return b.sf.Run(ctx, b.opts.n, fmt.Sprintf("bench-%s-r%d-", b.run, r))
		})
		if err != nil {
			err = fmt.Errorf("setflow: %w", err)
		}
		return err
	}
	first, second := runBase, runSetflow
	if r%2 == 1 {
		first, second = runSetflow, runBase
	}
	if err := first(); err != nil {
		return base, sf, err
	}
	return base, sf, second()
}

// timeToRevoke runs the time-to-revoke phase (skipped at -revoke-rate 0).
func (b *reactionsBench) timeToRevoke(ctx context.Context) error {
	o := b.opts
	if o.revokeRate <= 0 {
		return nil
	}
	rv, err := b.sf.TimeToRevoke(ctx, o.revokeRate, o.revokeDur, "bench-"+b.run+"-revoke-")
	if err != nil {
		return fmt.Errorf("time to revoke: %w", err)
	}
	fmt.Fprintf(b.out, "\ntime to revoke (fixed %g SETs/s for %s, open loop: %d revoking SETs, %s in turn,\n"+
		"for distinct users each with a session from before the event; from the 202 to the session row's revoked_at)\n",
		o.revokeRate, o.revokeDur, rv.Sent, strings.Join(reactionbench.RevokeEventTypes, " and "))
	reactionbench.ReportRevoke(b.out, rv)
	return nil
}

// startBenchServer starts a throw-away Temporal dev server with its SQLite
// file in a fresh directory dir; stop kills it and removes dir.
func startBenchServer(ctx context.Context, bin string, dynamicConfig ...string) (srv *devserver.Server, dir string, stop func(), err error) {
	dir, err = os.MkdirTemp("", "setflow-bench-temporal-")
	if err != nil {
		return nil, "", nil, err
	}
	srv, err = reactionbench.StartServer(ctx, bin, dir, dynamicConfig...)
	if err != nil {
		os.RemoveAll(dir)
		return nil, "", nil, err
	}
	return srv, dir, func() { _ = srv.Kill(); os.RemoveAll(dir) }, nil
}

// benchServerURL is the maintenance database on the server of
// SETFLOW_DATABASE_URL, where the benches create their throw-away databases.
func benchServerURL() (string, error) {
	db, err := config.FromEnv[config.Database]()
	return pgurl.WithDatabase(db.URL, "postgres"), err
}

// benchListenURL returns the URL the relay can LISTEN on: the given one, or
// the throw-away database's on the server of SETFLOW_DATABASE_URL.
func benchListenURL(ctx context.Context, db *sqlx.DB, given string) (string, error) {
	if given != "" {
		return given, nil
	}
	admin, err := benchServerURL()
	if err != nil {
		return "", err
	}
	var name string
	if err := db.GetContext(ctx, &name, `SELECT current_database()`); err != nil {
		return "", err
	}
	return pgurl.WithDatabase(admin, name), nil
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }
