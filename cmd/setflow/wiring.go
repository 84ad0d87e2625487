package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq" // PostgreSQL driver
	"go.temporal.io/sdk/client"
	sdkworker "go.temporal.io/sdk/worker"

	"github.com/setflow/setflow/audit"
	"github.com/setflow/setflow/audit/auditdb"
	"github.com/setflow/setflow/config"
	"github.com/setflow/setflow/inbox"
	"github.com/setflow/setflow/ingress"
	"github.com/setflow/setflow/metrics/temporalmetrics"
	"github.com/setflow/setflow/relay"
	"github.com/setflow/setflow/userstate/statedb"
	"github.com/setflow/setflow/worker"
)

// openDB connects and pings, so a wrong URL fails at start-up with a clear error.
func openDB(ctx context.Context, url string) (*sqlx.DB, error) {
	db, err := sqlx.Open("postgres", url)
	if err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	db.SetMaxOpenConns(32)
	db.SetMaxIdleConns(32)
	db.SetConnMaxIdleTime(5 * time.Minute)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("database unreachable (check SETFLOW_DATABASE_URL): %w", err)
	}
	return db, nil
}

// serveHTTP runs the ingress until ctx ends, then stops it gracefully: /readyz
// answers 503 at once (srv.Drain) and keep-alives end, requests are still
// served for sd.Delay so that load balancers notice and stop sending, then
// in-flight requests are drained for up to sd.Timeout: an event being stored
// is answered, never cut off.
func serveHTTP(ctx context.Context, log *slog.Logger, srv *http.Server, drain func(), sd config.Shutdown) error {
	return serveGraceful(ctx, log, "ingress", srv, func() { log.Info("ingress listening", "addr", srv.Addr) },
		func() {
			if drain != nil {
				drain()
			}
			srv.SetKeepAlivesEnabled(false)
			if sd.Delay > 0 {
				log.Info("ingress stopping: readiness fails, still serving", "delay", sd.Delay)
				time.Sleep(sd.Delay)
			}
			log.Info("ingress draining in-flight requests", "timeout", sd.Timeout)
		}, sd.Timeout)
}

// serve runs srv until ctx ends and then shuts it down gracefully; started
// is called once the listener goroutine runs.
func serve(ctx context.Context, name string, srv *http.Server, started func()) error {
	return serveGraceful(ctx, slog.Default(), name, srv, started, nil, 10*time.Second)
}

// serveGraceful runs srv until ctx ends; then calls stopping (which may wait
// while srv still serves) and shuts srv down, waiting up to timeout for
// in-flight requests.
func serveGraceful(ctx context.Context, log *slog.Logger, name string, srv *http.Server, started, stopping func(), timeout time.Duration) error {
	// Bind before saying so: "listening" in the log means a client can
	// connect now (probes, tests and operators rely on it).
	l, err := net.Listen("tcp", srv.Addr)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	started()
	select {
	case err := <-errc:
		return fmt.Errorf("%s: %w", name, err)
	case <-ctx.Done():
	}
	if stopping != nil {
		stopping()
	}
	shutdown, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil {
		log.Warn(name+": requests still in flight after the shutdown timeout were cut off", "timeout", timeout, "error", err)
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	log.Info(name + " stopped")
	return ctx.Err()
}

// runRelayLoop relays with a lazy Temporal client, so that it starts (and the
// inbox fills) while Temporal is still down.
//
// It also writes the audit checkpoints (every aud.CheckpointInterval).
func runRelayLoop(ctx context.Context, log *slog.Logger, db *sqlx.DB, dbURL string, topts client.Options, retention, stopTimeout time.Duration, aud config.Audit, key config.AuditKey) error {
	c, err := client.NewLazyClient(topts)
	if err != nil {
		return fmt.Errorf("temporal client: %w", err)
	}
	defer c.Close()
	wake, stopListen, err := inbox.Listen(dbURL)
	if err != nil {
		log.Warn("relay: no inbox notifications, polling only", "error", err)
	} else {
		defer stopListen()
	}
	auditLog := auditdb.NewStore(db)
	r := &relay.Relay{Inbox: inbox.NewPostgres(db), Temporal: withTracedStarter(c), Log: log, Wake: wake,
		Retention: retention, Finished: relay.WorkFinished(auditLog, statedb.NewStore(db)),
		StopTimeout: stopTimeout, Subjects: audit.SubjectHasher{Key: key.Bytes(log)}}
	go auditLog.RunCheckpoints(ctx, log, aud.CheckpointInterval)
	log.Info("relay running", "temporal", topts.HostPort)
	// The client is closed (deferred above) only after Run returned, that is
	// after the claimed batch was delivered and recorded.
	return r.Run(ctx)
}

// dialTemporal waits for Temporal to answer, so that a worker started before
// the server (or during an outage) comes up by itself.
func dialTemporal(ctx context.Context, log *slog.Logger, topts client.Options) (client.Client, error) {
	wait := time.Second
	for {
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		c, err := client.DialContext(dctx, topts)
		cancel()
		if err == nil {
			return c, nil
		}
		log.Warn("temporal unreachable, retrying", "address", topts.HostPort, "error", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 30*time.Second)
	}
}

// runWorkerLoop runs the workers until ctx ends, then stops polling and lets
// running activities finish within stopTimeout (worker.Set.Stop) before the
// client is closed: an activity cut off by the timeout reports its failure
// first, so that its retry starts at once rather than after its timeout.
func runWorkerLoop(ctx context.Context, log *slog.Logger, db *sqlx.DB, cfg config.Worker, topts client.Options, stopTimeout time.Duration) error {
	acts, closeActs, err := worker.NewActivities(ctx, cfg, db, log)
	if err != nil {
		return err
	}
	defer closeActs()
	c, err := dialTemporal(ctx, log, topts)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := ensureSearchAttributes(ctx, log, c, topts.Namespace); err != nil {
		return err
	}
	w := worker.New(c, acts, sdkworker.Options{WorkerStopTimeout: stopTimeout})
	w.CRMRate = cfg.Reactions.CRMRate
	w.Log = log
	if err := w.Start(); err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	log.Info("worker running", "temporal", topts.HostPort, "stop_timeout", stopTimeout)
	<-ctx.Done()
	w.Stop()
	return ctx.Err()
}

func newIngress(db *sqlx.DB, log *slog.Logger, v ingress.SETVerifier, cfg config.Ingress) *ingress.Server {
	in := inbox.NewPostgres(db)
	in.MaxInFlight, in.MaxBatch = cfg.InboxInFlight, cfg.InboxMaxBatch
	return &ingress.Server{
		Inbox:   withTracedInbox(in),
		SETs:    v,
		Log:     log,
		MaxBody: cfg.MaxBody,
		Ready:   ingressReady(db.DB),
	}
}

// temporalOptions builds the client options every Temporal-facing command
// uses, with payload encryption when SETFLOW_CODEC_KEYS is set: all of them
// must agree, or a worker could not read what the relay wrote.
func temporalOptions(t *config.Temporal, log *slog.Logger) (client.Options, error) {
	opts, err := t.ClientOptions(log)
	if err != nil {
		return opts, err
	}
	// The SDK's metrics go to the same Prometheus registry as setflow's.
	opts.MetricsHandler = temporalmetrics.Default()
	if err := addTracingInterceptor(&opts); err != nil {
		return opts, err
	}
	return opts, applyCodec(&opts, log, t.CodecKeys)
}
