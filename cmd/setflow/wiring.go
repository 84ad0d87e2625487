package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq" // PostgreSQL driver
	"go.temporal.io/sdk/client"
	sdkworker "go.temporal.io/sdk/worker"

	"github.com/setflow/setflow/audit"
	"github.com/setflow/setflow/config"
	"github.com/setflow/setflow/inbox"
	"github.com/setflow/setflow/ingress"
	"github.com/setflow/setflow/relay"
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

// serveHTTP runs srv until ctx ends, then drains in-flight requests: an event
// being stored is answered, never cut off.
func serveHTTP(ctx context.Context, log *slog.Logger, srv *http.Server) error {
	return serve(ctx, "ingress", srv, func() { log.Info("ingress listening", "addr", srv.Addr) })
}

// serve runs srv until ctx ends and then shuts it down gracefully; started
// is called once the listener goroutine runs.
func serve(ctx context.Context, name string, srv *http.Server, started func()) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	started()
	select {
	case err := <-errc:
		return fmt.Errorf("%s: %w", name, err)
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil {
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return ctx.Err()
}

// runRelayLoop relays with a lazy Temporal client, so that it starts (and the
// inbox fills) while Temporal is still down.
func runRelayLoop(ctx context.Context, log *slog.Logger, db *sqlx.DB, dbURL string, topts client.Options, retention time.Duration) error {
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
	r := &relay.Relay{Inbox: inbox.NewPostgres(db), Temporal: c, Log: log, Wake: wake, Retention: retention,
		Subjects: audit.SubjectHasher{Key: auditKey(log, config.AuditKeyFromEnv())}}
	log.Info("relay running", "temporal", topts.HostPort)
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

func runWorkerLoop(ctx context.Context, log *slog.Logger, db *sqlx.DB, cfg backendsConfig, topts client.Options) error {
	acts, err := newActivities(ctx, log, db, cfg)
	if err != nil {
		return err
	}
	c, err := dialTemporal(ctx, log, topts)
	if err != nil {
		return err
	}
	defer c.Close()
	w := worker.New(c, acts, sdkworker.Options{})
	w.CRMRate = cfg.reactions.CRMRate
	if err := w.Start(); err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	log.Info("worker running", "temporal", topts.HostPort)
	<-ctx.Done()
	w.Stop()
	return ctx.Err()
}

func newIngress(db *sqlx.DB, log *slog.Logger, v ingress.SETVerifier, maxBody int64) *ingress.Server {
	return &ingress.Server{
		Inbox:   inbox.NewPostgres(db),
		SETs:    v,
		Log:     log,
		MaxBody: maxBody,
		Ready:   db.PingContext,
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
	return opts, applyCodec(&opts, log)
}
