package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	sdkworker "go.temporal.io/sdk/worker"

	"github.com/setflow/setflow/config"
	"github.com/setflow/setflow/internal/pgurl"
	"github.com/setflow/setflow/internal/reactionbench"
)

// runBenchReactions compares full reactions with the product's no-op baseline
// on one Temporal dev server (SQLite in WAL mode) in the same run.
func runBenchReactions(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("setflow bench reactions", flag.ContinueOnError)
	n := fs.Int("n", 150, "workflows per measured batch: no-op workflows for the baseline, events for setflow")
	warmup := fs.Int("warmup", 20, "workflows of each kind run first and not measured")
	rounds := fs.Int("rounds", 3, "measured rounds, each running both kinds (alternating which goes first); figures are over all rounds")
	var bc config.Bench
	bc.Register(fs)
	bin := &bc.TemporalBin
	dbURL := fs.String("database-url", "", "use this database as is (migrated; the bench's rows, keys and users prefixed bench-, stay).\n"+
		"Default: a throw-away database on the server of SETFLOW_DATABASE_URL, dropped at the end.\n"+
		"Never point it at a database a relay is serving")
	dbPool := fs.Int("db-pool", 32, "maximum open Postgres connections of the in-process ingress, relay and worker")
	relayBatch := fs.Int("relay-batch", 0, "entries one relay claim takes (0: the relay's default, 100)")
	relayConc := fs.Int("relay-concurrency", 0, "concurrent workflow starts of one relay batch (0: the inbox's default, 8)")
	wfPollers := fs.Int("workflow-pollers", 0, "workflow task pollers per worker (0: the SDK's default), for both workers")
	actPollers := fs.Int("activity-pollers", 0, "activity task pollers per worker (0: the SDK's default), for both workers")
	revokeRate := fs.Float64("revoke-rate", 5, "revoking SETs/s of the time-to-revoke phase (fixed rate, open loop); 0 skips it")
	revokeDur := fs.Duration("revoke-duration", 20*time.Second, "length of the time-to-revoke phase")
	var dynConfig stringList
	fs.Var(&dynConfig, "dynamic-config", "dev server dynamic config value KEY=JSON (repeatable), for what-if runs; applies to both\n"+
		"the baseline and setflow, e.g. system.enableActivityEagerExecution=true")
	fs.Usage = func() {
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
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if *n <= 0 || *warmup < 0 || *rounds <= 0 || *dbPool <= 0 || *revokeRate < 0 || (*revokeRate > 0 && *revokeDur <= 0) {
		return errors.New("-n, -rounds and -db-pool must be positive, -warmup and -revoke-rate not negative, -revoke-duration positive")
	}
	if _, err := os.Stat(*bin); err != nil {
		return fmt.Errorf("temporal CLI %s: %w (deployments/local/test.sh builds .bin/temporal; or set SETFLOW_TEMPORAL_BIN)", *bin, err)
	}

	db, dbName, cleanup, err := benchDatabase(ctx, *dbURL, *dbPool)
	if err != nil {
		return err
	}
	defer cleanup()
	var pgVersion string
	_ = db.GetContext(ctx, &pgVersion, `SHOW server_version`)

	dir, err := os.MkdirTemp("", "setflow-bench-temporal-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	start := time.Now()
	srv, err := reactionbench.StartServer(ctx, *bin, dir, dynConfig...)
	if err != nil {
		return err
	}
	defer srv.Kill() //nolint:errcheck // a throw-away server
	out := os.Stdout
	fmt.Fprintf(out, "setflow bench reactions: %s, GOMAXPROCS=%d, %d CPUs, PostgreSQL %s, database %s\n",
		runtime.Version(), runtime.GOMAXPROCS(0), runtime.NumCPU(), pgVersion, dbName)
	fmt.Fprintf(out, "Temporal dev server %s (SQLite %s, pragmas %s) ready in %s\n", srv.HostPort(), dir+"/temporal.db",
		strings.Join(reactionbench.Pragmas, ","), time.Since(start).Round(10*time.Millisecond))
	if len(dynConfig) > 0 {
		fmt.Fprintf(out, "dynamic config (both runs): %s\n", strings.Join(dynConfig, " "))
	}

	reactionbench.Diagnostics = os.Stderr
	wopts := sdkworker.Options{MaxConcurrentWorkflowTaskPollers: *wfPollers, MaxConcurrentActivityTaskPollers: *actPollers}
	base, err := reactionbench.NewBaseline(ctx, srv, wopts)
	if err != nil {
		return err
	}
	defer base.Close()
	listenURL, err := benchListenURL(ctx, db, *dbURL)
	if err != nil {
		return err
	}
	sf, err := reactionbench.NewSetflow(ctx, srv, reactionbench.Config{DB: db, DBURL: listenURL, Worker: wopts,
		RelayBatch: *relayBatch, RelayConcurrency: *relayConc})
	if err != nil {
		return err
	}
	defer sf.Close()

	run := randomHex(4)
	if *warmup > 0 {
		if _, err := base.Run(ctx, *warmup, "bench-noop-"+run+"-warm-"); err != nil {
			return fmt.Errorf("baseline warm-up: %w", err)
		}
		if _, err := sf.Run(ctx, *warmup, "bench-"+run+"-warm-"); err != nil {
			return fmt.Errorf("setflow warm-up: %w", err)
		}
	}
	// Rounds alternate which kind goes first, so that a slow spell on a
	// shared machine hurts both alike.
	var baseTotal, sfTotal reactionbench.Result
	for r := range *rounds {
		var b, s reactionbench.Result
		runBase := func() (err error) {
			b, err = reactionbench.Measure(srv, func() (reactionbench.Result, error) {
				return base.Run(ctx, *n, fmt.Sprintf("bench-noop-%s-r%d-", run, r))
			})
			if err != nil {
				err = fmt.Errorf("baseline: %w", err)
			}
			return err
		}
		runSetflow := func() (err error) {
			s, err = reactionbench.Measure(srv, func() (reactionbench.Result, error) {
				return sf.Run(ctx, *n, fmt.Sprintf("bench-%s-r%d-", run, r))
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
			return err
		}
		if err := second(); err != nil {
			return err
		}
		if *rounds > 1 {
			fmt.Fprintf(out, "round %d: baseline %.1f/s, setflow %.1f/s, ratio %.2f×\n", r+1, b.PerSec(), s.PerSec(), reactionbench.Ratio(b, s))
		}
		baseTotal.Add(b)
		sfTotal.Add(s)
	}
	fmt.Fprintf(out, "\nreaction throughput (%d workflows of each kind per round, %d round(s), warm-up %d)\n", *n, *rounds, *warmup)
	reactionbench.Report(out, baseTotal, sfTotal)

	if *revokeRate > 0 {
		rv, err := sf.TimeToRevoke(ctx, *revokeRate, *revokeDur, "bench-"+run+"-revoke-")
		if err != nil {
			return fmt.Errorf("time to revoke: %w", err)
		}
		fmt.Fprintf(out, "\ntime to revoke (fixed %g SETs/s for %s, open loop: %d revoking SETs, %s in turn,\n"+
			"for distinct users each with a session from before the event; from the 202 to the session row's revoked_at)\n",
			*revokeRate, *revokeDur, rv.Sent, strings.Join(reactionbench.RevokeEventTypes, " and "))
		reactionbench.ReportRevoke(out, rv)
	}
	fmt.Fprintln(out)
	return nil
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
