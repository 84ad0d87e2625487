package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/setflow/setflow/migrations"
)

// readyCheck is one dependency a component needs before it takes work.
type readyCheck struct {
	name  string
	check func(ctx context.Context) error
}

// readiness answers /readyz from a component's checks and /healthz (the
// process runs and serves) for Kubernetes probes. Once stopping is set (a
// graceful stop) /readyz fails while /healthz still passes, so the kubelet
// does not kill a pod that is finishing its work.
type readiness struct {
	checks   []readyCheck
	stopping atomic.Bool
}

// checkTimeout bounds one probe's checks together, below the Deployments'
// probe timeout (3 s).
const checkTimeout = 2500 * time.Millisecond

// errStopping: a graceful stop has begun.
var errStopping = errors.New("stopping")

// ready runs every check; on a failure it returns the check's name and error.
func (r *readiness) ready(ctx context.Context) (string, error) {
	if r.stopping.Load() {
		return "process", errStopping
	}
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	for _, c := range r.checks {
		if err := c.check(ctx); err != nil {
			return c.name, err
		}
	}
	return "", nil
}

func (r *readiness) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, req *http.Request) {
		if name, err := r.ready(req.Context()); err != nil {
			// The answer names the dependency only; a driver's error may
			// quote an address, and the probe's reader needs no more.
			http.Error(w, "not ready: "+name+" "+readyReason(err), http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	return mux
}

// readyReason is a short, secret-free reason for a failed readiness check.
func readyReason(err error) string {
	switch {
	case errors.Is(err, migrations.ErrBehind):
		return "schema behind this binary's version"
	case errors.Is(err, errStopping):
		return "stopping"
	}
	return "unreachable"
}

// dbReady: PostgreSQL answers and the schema is at this binary's version.
// Once the schema was seen current it is not asked again (it only moves
// forward), the ping still runs on every probe.
func dbReady(db *sql.DB) readyCheck {
	var current atomic.Bool
	return readyCheck{name: "postgres", check: func(ctx context.Context) error {
		if err := db.PingContext(ctx); err != nil {
			return err
		}
		if current.Load() {
			return nil
		}
		if err := migrations.CheckCurrent(ctx, db); err != nil {
			return err
		}
		current.Store(true)
		return nil
	}}
}

// temporalReady: the Temporal frontend answers its health check. c is a
// client of its own (lazy, see healthTemporalClient), so that the probe
// never waits behind the component's own connection set-up.
func temporalReady(c client.Client) readyCheck {
	return readyCheck{name: "temporal", check: func(ctx context.Context) error {
		_, err := c.CheckHealth(ctx, &client.CheckHealthRequest{})
		return err
	}}
}

// serveHealth serves r on addr (nothing when addr is empty). /readyz fails
// from the moment ctx ends; the listener stays up until the returned stop
// is called, when the component has finished its graceful stop, so that
// liveness keeps passing meanwhile.
func serveHealth(ctx context.Context, log *slog.Logger, addr string, r *readiness) (stop func()) {
	if addr == "" {
		return func() {}
	}
	srv := &http.Server{Addr: addr, Handler: r.handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		r.stopping.Store(true)
	}()
	go func() {
		// Bind before saying so: "listening" means a probe can connect.
		l, err := net.Listen("tcp", addr)
		if err != nil {
			log.Error("health server stopped", "error", err)
			return
		}
		log.Info("health listening", "addr", addr)
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("health server stopped", "error", err)
		}
	}()
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}
}

// serviceReadiness is the relay's and the worker's readiness: PostgreSQL
// with the schema current, and Temporal. It returns a stop for the probe's
// own Temporal client.
func serviceReadiness(db *sql.DB, topts client.Options) (*readiness, func(), error) {
	// A lazy client of its own: the probe never blocks the component's
	// start-up, and dials (again) on each check while Temporal is down.
	opts := topts
	opts.Identity = "setflow-readiness"
	c, err := client.NewLazyClient(opts)
	if err != nil {
		return nil, nil, fmt.Errorf("temporal client for readiness: %w", err)
	}
	return &readiness{checks: []readyCheck{dbReady(db), temporalReady(c)}}, c.Close, nil
}

// startServiceHealth serves the relay's or worker's probes on addr until
// the returned stop is called.
func startServiceHealth(ctx context.Context, log *slog.Logger, addr string, db *sql.DB, topts client.Options) (func(), error) {
	if addr == "" {
		return func() {}, nil
	}
	r, closeClient, err := serviceReadiness(db, topts)
	if err != nil {
		return nil, err
	}
	stop := serveHealth(ctx, log, addr, r)
	return func() { stop(); closeClient() }, nil
}

// ingressReady is the ingress's readiness: PostgreSQL with the schema
// current, and nothing else. The ingress never waits on Temporal, so it
// stays ready (and keeps accepting events into the inbox) while Temporal is
// down.
func ingressReady(db *sql.DB) func(ctx context.Context) error {
	c := dbReady(db)
	return func(ctx context.Context) error { return c.check(ctx) }
}

// waitForSchema is `setflow migrate -wait`: it returns once the schema is at
// this binary's version, so that an init container orders a Deployment's
// rollout after the migrate Job without either knowing about the other.
func waitForSchema(ctx context.Context, log *slog.Logger, db *sql.DB, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	last := time.Time{}
	err := migrations.WaitCurrent(ctx, db, 2*time.Second, func(err error) {
		if time.Since(last) > 30*time.Second {
			log.Info("waiting for the schema", "reason", readyReason(err), "want", migrations.Latest())
			last = time.Now()
		}
	})
	if err != nil {
		return fmt.Errorf("schema not at version %d: %w", migrations.Latest(), err)
	}
	log.Info("schema at this binary's version", "version", migrations.Latest())
	return nil
}
