package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/setflow/setflow/audit"
	"github.com/setflow/setflow/internal/pace"
	"github.com/setflow/setflow/statusapi"
	"github.com/setflow/setflow/userstate"
	"github.com/setflow/setflow/userstate/statedb"
)

// benchTargetStatusP99 is the status API's latency target: fast enough for
// a login path (issue 12).
const benchTargetStatusP99 = 5 * time.Millisecond

// runBenchStatus measures the status API at a fixed rate (open loop: each
// latency runs from the request's scheduled send time, so queueing counts)
// against a real Postgres state table, next to a no-op handler on the same
// HTTP stack at the same rate, so that the API's own cost shows as a ratio.
func runBenchStatus(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("setflow bench status", flag.ContinueOnError)
	dbURL := fs.String("database-url", "", "use this (migrated) database; default: a throw-away database on the server of SETFLOW_DATABASE_URL")
	rate := fs.Float64("rate", 1000, "requests/s (open loop)")
	duration := fs.Duration("duration", 10*time.Second, "length of each fixed-rate run")
	users := fs.Int("users", 2000, "users with a state, looked up at random (a tenth of the lookups are unknown users)")
	dbPool := fs.Int("db-pool", 32, "maximum open Postgres connections")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *rate <= 0 || *duration <= 0 || *users <= 0 || *dbPool <= 0 {
		return errors.New("-rate, -duration, -users and -db-pool must be positive")
	}
	db, dbName, cleanup, err := benchDatabase(ctx, *dbURL, *dbPool)
	if err != nil {
		return err
	}
	defer cleanup()
	out := os.Stdout
	fmt.Fprintf(out, "setflow bench status: %s, GOMAXPROCS=%d, %d CPUs, database %s\n", runtime.Version(), runtime.GOMAXPROCS(0), runtime.NumCPU(), dbName)

	store := statedb.NewStore(db)
	hasher := audit.SubjectHasher{Key: []byte(randomHex(16))}
	run := randomHex(4)
	start := time.Now()
	seeded, err := seedUserStates(ctx, store, hasher, "bench-"+run+"-", *users)
	if err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	if *dbURL != "" {
		defer func() { _ = store.DeleteUsers(context.WithoutCancel(ctx), "bench-"+run+"-") }()
	}
	fmt.Fprintf(out, "seeded %d user states in %s\n", *users, time.Since(start).Round(10*time.Millisecond))

	token := randomHex(16)
	reader, err := statedb.NewReader(ctx, db)
	if err != nil {
		return err
	}
	defer reader.Close()
	base, stop, err := startStatusServer(&statusapi.Server{States: reader, Subjects: hasher, Issuer: benchIssuer, Tokens: []string{token}})
	if err != nil {
		return err
	}
	defer stop()
	if err := warmDB(ctx, db, *dbPool); err != nil {
		return err
	}
	n := int(*rate * duration.Seconds())
	paths := make([]string, n)
	for i := range paths {
		if i%10 == 9 {
			paths[i] = statusapi.PathSubjects + fmt.Sprintf("unknown-%s-%d", run, i)
		} else {
			paths[i] = statusapi.PathSubjects + seeded[(i*7919)%len(seeded)]
		}
	}
	c := benchClient(256)
	defer c.CloseIdleConnections()
	// Warm-up: connections, the pool and the planner's caches.
	if _, err := statusRun(ctx, c, base, token, paths[:min(n, int(*rate))], *rate); err != nil {
		return err
	}
	fmt.Fprintf(out, "\nfixed rate %s requests/s for %s (open loop: latency from the scheduled send time; %d requests; HTTP keep-alive on 127.0.0.1)\n",
		thousands(*rate), *duration, n)
	return statusRuns(ctx, out, c, base, token, paths, *rate)
}

// seedUserStates gives n users (ids prefix0…) a linked, locked state, on 8
// connections, and returns their ids.
func seedUserStates(ctx context.Context, store *statedb.Store, hasher audit.SubjectHasher, prefix string, n int) ([]string, error) {
	yes := true
	seeded := make([]string, n)
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	next := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range next {
				id := fmt.Sprintf("%s%d", prefix, i)
				seeded[i] = id
				at := time.Now().Add(-time.Hour)
				_, err := store.Apply(ctx, userstate.Subject{Hash: hasher.Hash(benchIssuer, id), Issuer: benchIssuer, UserID: id}, "seed",
					func(s userstate.State) (userstate.State, userstate.Decision) {
						return userstate.Apply(s, userstate.Change{Time: at, Now: at, Link: &yes, Lock: &yes, Reauth: i%2 == 0,
							Consents: map[string]bool{"account_email": true, "profile": i%3 != 0}})
					})
				if err != nil {
					select {
					case errc <- err:
					default:
					}
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errc:
		return nil, err
	default:
	}
	return seeded, nil
}

// startStatusServer serves api under /v1/ and a no-op handler at /noop (the
// baseline) on 127.0.0.1; stop closes the server.
func startStatusServer(api *statusapi.Server) (base string, stop func(), err error) {
	mux := http.NewServeMux()
	mux.Handle("/v1/", api.Handler())
	mux.HandleFunc("/noop", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{}`))
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(l) }()
	return "http://" + l.Addr().String(), func() { hs.Close() }, nil
}

// statusRuns measures the no-op baseline, then the status API on paths, and
// prints both next to the target.
func statusRuns(ctx context.Context, out io.Writer, c *http.Client, base, token string, paths []string, rate float64) error {
	noop := make([]string, len(paths))
	for i := range noop {
		noop[i] = "/noop"
	}
	baseline, err := statusRun(ctx, c, base, token, noop, rate)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "  %-26s %s  errors %d\n", "no-op handler (baseline)", baseline.latencies(), baseline.errors)
	res, err := statusRun(ctx, c, base, token, paths, rate)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "  %-26s %s  errors %d %s  target p99 < %s\n", "GET /v1/subjects/{id}", res.latencies(), res.errors, res.errorDetail(), ms(benchTargetStatusP99))
	p99, b99 := res.percentile(0.99), baseline.percentile(0.99)
	verdict := "MET"
	if p99 >= benchTargetStatusP99 {
		verdict = "MISSED"
	}
	fmt.Fprintf(out, "  %-26s %s (%.1f× the no-op baseline's p99 of %s): target %s\n\n", "p99", ms(p99), float64(p99)/float64(max(b99, 1)), ms(b99), verdict)
	return nil
}

// statusRun sends GETs of paths at a fixed rate (open loop); a request counts
// as answered when it got 200.
func statusRun(ctx context.Context, c *http.Client, base, token string, paths []string, rate float64) (*benchResult, error) {
	var mu sync.Mutex
	res := &benchResult{lat: make([]time.Duration, 0, len(paths))}
	start := pace.OpenLoop(ctx, len(paths), rate, func(i int, at time.Time) {
		status, err := getStatus(ctx, c, base+paths[i], token)
		lat := time.Since(at)
		mu.Lock()
		defer mu.Unlock()
		res.record(http.StatusOK, status, err, lat)
	})
	res.elapsed = time.Since(start)
	return res, ctx.Err()
}

func getStatus(ctx context.Context, c *http.Client, url, token string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	return doDrained(c, req)
}
