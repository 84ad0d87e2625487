// Package reactionbench measures reaction throughput against the product's
// baseline ("Numbers to beat"): a Temporal dev server with SQLite in WAL mode
// completing no-op workflows of four no-op activities, and full setflow
// reactions (ingress → Postgres inbox → relay → the user's stream
// (UserStream), which applies the event to the user's state and runs its
// steps → real Postgres back ends) on the same server in the same run.
// Setflow.TimeToRevoke measures, at a fixed rate, the time from a revoking
// SET's 202 to its committed session revocation.
// `setflow bench reactions` and integration's BenchmarkReactions share it.
package reactionbench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	sdkworker "go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/setflow/setflow/audit"
	"github.com/setflow/setflow/audit/auditdb"
	"github.com/setflow/setflow/config"
	"github.com/setflow/setflow/inbox"
	"github.com/setflow/setflow/ingress"
	"github.com/setflow/setflow/internal/devserver"
	"github.com/setflow/setflow/internal/proccpu"
	"github.com/setflow/setflow/relay"
	"github.com/setflow/setflow/secevent"
	"github.com/setflow/setflow/simulator"
	"github.com/setflow/setflow/worker"
	"github.com/setflow/setflow/workflows"
)

// Target is the product's goal: reactions per second at least this fraction
// of the no-op baseline measured in the same run.
const Target = 0.8

// BaselineTarget is product.md's figure for the baseline on the 2-core
// development machine, for orientation only (the run's own baseline counts).
const BaselineTarget = 30.0

// Pragmas are the dev server's SQLite settings of the baseline: WAL.
var Pragmas = []string{"journal_mode=wal"}

// NoopTaskQueue is the baseline's own task queue, apart from setflow's.
const NoopTaskQueue = "setflow-bench-noop"

// NoopActivities is how many no-op activities one baseline workflow runs.
const NoopActivities = 4

// NoopWorkflow runs n no-op activities one after the other, like a reaction
// runs its steps.
func NoopWorkflow(ctx workflow.Context, n int) error {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{StartToCloseTimeout: 30 * time.Second})
	for range n {
		if err := workflow.ExecuteActivity(ctx, NoopActivity).Get(ctx, nil); err != nil {
			return err
		}
	}
	return nil
}

// NoopActivity does nothing.
func NoopActivity(context.Context) error { return nil }

// Result is one measured batch.
type Result struct {
	Workflows int
	Elapsed   time.Duration
	// ServerCPU is the CPU time the dev server used, ProcessCPU the CPU time
	// of this process (ingress, relay, workers), during the batch. Unlike
	// throughput they hardly depend on what else runs on the machine.
	ServerCPU, ProcessCPU time.Duration
	// Detail is a short check of what the batch did (setflow only).
	Detail string
}

// Add accumulates another batch of the same kind.
func (r *Result) Add(o Result) {
	r.Workflows += o.Workflows
	r.Elapsed += o.Elapsed
	r.ServerCPU += o.ServerCPU
	r.ProcessCPU += o.ProcessCPU
	if o.Detail != "" {
		r.Detail = o.Detail
	}
}

// ServerCPUPerWorkflow is the dev server's CPU time per completed workflow.
func (r Result) ServerCPUPerWorkflow() time.Duration {
	if r.Workflows == 0 {
		return 0
	}
	return r.ServerCPU / time.Duration(r.Workflows)
}

// Measure runs one batch and records the CPU time it cost.
func Measure(srv *devserver.Server, run func() (Result, error)) (Result, error) {
	s0, p0 := srv.CPUTime(), proccpu.Self()
	r, err := run()
	r.ServerCPU, r.ProcessCPU = srv.CPUTime()-s0, proccpu.Self()-p0
	return r, err
}

// PerSec is completed workflows per second.
func (r Result) PerSec() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Workflows) / r.Elapsed.Seconds()
}

// StartServer starts the baseline's dev server: SQLite in WAL mode in dir, with
// optional dynamic config values (KEY=JSON) for what-if runs.
func StartServer(ctx context.Context, bin, dir string, dynamicConfig ...string) (*devserver.Server, error) {
	return devserver.Start(ctx, devserver.Options{Bin: bin, DBFile: dir + "/temporal.db", Pragmas: Pragmas, DynamicConfig: dynamicConfig})
}

// Baseline runs the no-op workflows on a server.
type Baseline struct {
	starter client.Client
	wc      client.Client
	w       sdkworker.Worker
	// Starters is how many goroutines start workflows (default 8, like the
	// relay's delivery concurrency).
	Starters int
}

// NewBaseline connects a worker (its own connection, as a separate process
// would have) and a starter to the server and starts the worker.
func NewBaseline(ctx context.Context, srv *devserver.Server, opts sdkworker.Options) (*Baseline, error) {
	starter, err := srv.Dial(ctx, devserver.Quiet{})
	if err != nil {
		return nil, err
	}
	wc, err := srv.Dial(ctx, devserver.Quiet{})
	if err != nil {
		starter.Close()
		return nil, err
	}
	w := sdkworker.New(wc, NoopTaskQueue, opts)
	w.RegisterWorkflow(NoopWorkflow)
	w.RegisterActivity(NoopActivity)
	if err := w.Start(); err != nil {
		wc.Close()
		starter.Close()
		return nil, err
	}
	return &Baseline{starter: starter, wc: wc, w: w, Starters: 8}, nil
}

// Close stops the worker and the connections.
func (b *Baseline) Close() {
	b.w.Stop()
	b.wc.Close()
	b.starter.Close()
}

// Run starts n workflows (ids prefix0 … prefix<n-1>) and measures from the
// first start to the last completion.
func (b *Baseline) Run(ctx context.Context, n int, prefix string) (Result, error) {
	start := time.Now()
	err := forEach(ctx, max(1, b.Starters), n, func(i int) error {
		_, err := b.starter.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
			ID: fmt.Sprintf("%s%d", prefix, i), TaskQueue: NoopTaskQueue,
		}, NoopWorkflow, NoopActivities)
		if err != nil {
			return fmt.Errorf("start no-op workflow: %w", err)
		}
		return nil
	})
	if err != nil {
		return Result{}, err
	}
	if err := WaitCompleted(ctx, b.starter, "NoopWorkflow", prefix, n); err != nil {
		return Result{}, err
	}
	return Result{Workflows: n, Elapsed: time.Since(start)}, nil
}

// forEach runs do for 0 … n-1 on g goroutines and returns the first error;
// a goroutine stops at its own error, the others finish their work.
func forEach(ctx context.Context, g, n int, do func(i int) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, 1)
	for range g {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := do(i); err != nil {
					select {
					case errc <- err:
					default:
					}
					return
				}
			}
		})
	}
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

// signWithSession signs set and gives its user a session created an hour
// before it was issued, for the event to revoke.
func (s *Setflow) signWithSession(ctx context.Context, set simulator.SET) (string, error) {
	claims, err := set.Claims()
	if err != nil {
		return "", err
	}
	token, err := s.key.Sign(claims)
	if err != nil {
		return "", err
	}
	if _, err := s.db.ExecContext(ctx, `INSERT INTO sessions (id, user_id, created_at) VALUES ($1, $2, $3)`,
		set.UserID+"-s", set.UserID, set.IssuedAt.Add(-time.Hour)); err != nil {
		return "", err
	}
	return token, nil
}

// WaitCompleted polls the server's visibility store until n workflows of the
// type whose ids start with prefix have completed; it fails as soon as one
// closed otherwise. Polling costs the server one count query per 100 ms, the
// same for the baseline and setflow.
func WaitCompleted(ctx context.Context, c client.Client, workflowType, prefix string, n int) error {
	base := fmt.Sprintf("WorkflowType = '%s' AND WorkflowId STARTS_WITH '%s'", workflowType, prefix)
	lastCheck := time.Now()
	lastDone, lastProgress := int64(-1), time.Now()
	for {
		done, err := count(ctx, c, base+" AND ExecutionStatus = 'Completed'")
		if err != nil {
			return err
		}
		if done >= int64(n) {
			return nil
		}
		if done != lastDone {
			lastDone, lastProgress = done, time.Now()
		} else if Diagnostics != nil && time.Since(lastProgress) > 10*time.Second {
			lastProgress = time.Now()
			fmt.Fprintf(Diagnostics, "reactionbench: no %s completed for 10 s (%d of %d): %s\n", workflowType, done, n,
				describeOneRunning(ctx, c, base))
		}
		if time.Since(lastCheck) > time.Second {
			lastCheck = time.Now()
			bad, err := count(ctx, c, base+" AND ExecutionStatus != 'Running' AND ExecutionStatus != 'Completed'")
			if err != nil {
				return err
			}
			if bad > 0 {
				return fmt.Errorf("%d %s workflow(s) closed without completing", bad, workflowType)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d of %d %s workflows completed: %w", done, n, workflowType, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Diagnostics, when set, receives a description of a running workflow when
// a batch makes no progress for 10 s.
var Diagnostics io.Writer

func describeOneRunning(ctx context.Context, c client.Client, base string) string {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := c.ListWorkflow(cctx, &workflowservice.ListWorkflowExecutionsRequest{
		Query: base + " AND ExecutionStatus = 'Running'", PageSize: 1})
	if err != nil || len(resp.Executions) == 0 {
		return fmt.Sprintf("no running workflow listed (%v)", err)
	}
	ex := resp.Executions[0].Execution
	return describe(cctx, c, ex.WorkflowId, ex.RunId)
}

// describe names a workflow's pending work.
func describe(ctx context.Context, c client.Client, workflowID, runID string) string {
	d, err := c.DescribeWorkflowExecution(ctx, workflowID, runID)
	if err != nil {
		return err.Error()
	}
	info := d.WorkflowExecutionInfo
	out := fmt.Sprintf("%s started %s ago, history length %d", workflowID,
		time.Since(info.GetStartTime().AsTime()).Round(time.Second), info.GetHistoryLength())
	if wt := d.PendingWorkflowTask; wt != nil {
		out += fmt.Sprintf("; workflow task %s attempt %d", wt.State, wt.Attempt)
	}
	for _, pa := range d.PendingActivities {
		out += fmt.Sprintf("; activity %s %s attempt %d", pa.ActivityType.GetName(), pa.State, pa.Attempt)
		if pa.LastFailure != nil {
			out += " last failure: " + pa.LastFailure.Message
		}
	}
	return out
}

func count(ctx context.Context, c client.Client, query string) (int64, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := c.CountWorkflow(cctx, &workflowservice.CountWorkflowExecutionsRequest{Query: query})
	if err != nil {
		return 0, fmt.Errorf("count workflows (%s): %w", query, err)
	}
	return resp.GetCount(), nil
}

// Setflow is a complete setflow in one process on a dev server: the ingress on
// a loopback port (real SET verification, Postgres inbox), the relay (LISTEN/
// NOTIFY + poll, Signal-With-Start of each user's stream) and the production
// worker set with the real activities on Postgres back ends (per-user state
// with its profile projection, sessions, audit chain). Email, CRM and Kakao's
// API are not configured: their steps are audited as skipped.
type Setflow struct {
	db       *sqlx.DB
	observer client.Client
	clients  []client.Client
	workers  *worker.Set
	// closeActs releases the activities' back ends (worker.NewActivities).
	closeActs func()
	key       *simulator.Key
	url       string
	httpSrv   *http.Server
	cancel    context.CancelFunc
	relayed   chan struct{}
	stopWake  func()
	http      *http.Client
}

// Config tunes the setflow under test.
type Config struct {
	DB *sqlx.DB
	// DBURL lets the relay LISTEN for new entries; empty polls only.
	DBURL string
	// Worker options of the production worker set.
	Worker sdkworker.Options
	// RelayBatch and RelayConcurrency tune the relay (0: its defaults).
	RelayBatch, RelayConcurrency int
	Log                          *slog.Logger
}

const (
	benchIssuer   = "https://kauth.kakao.com"
	benchAudience = "setflow-bench-app"
)

// NewSetflow starts ingress, relay and worker against srv.
func NewSetflow(ctx context.Context, srv *devserver.Server, cfg Config) (_ *Setflow, err error) {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Setflow{db: cfg.DB, relayed: make(chan struct{})}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	dial := func() (client.Client, error) {
		c, err := srv.Dial(ctx, devserver.Quiet{})
		if err == nil {
			s.clients = append(s.clients, c)
		}
		return c, err
	}
	// Separate connections, as separate processes would have.
	if s.observer, err = dial(); err != nil {
		return nil, err
	}
	wc, err := dial()
	if err != nil {
		return nil, err
	}
	rc, err := dial()
	if err != nil {
		return nil, err
	}

	acts, closeActs, err := worker.NewActivities(ctx, WorkerConfig(), cfg.DB, log)
	if err != nil {
		return nil, err
	}
	s.closeActs = closeActs
	s.workers = worker.New(wc, acts, cfg.Worker)
	if err := s.workers.Start(); err != nil {
		s.workers = nil
		return nil, fmt.Errorf("worker: %w", err)
	}

	if err := s.startIngress(cfg, log); err != nil {
		return nil, err
	}

	// Relay.
	rin := inbox.NewPostgres(cfg.DB)
	if cfg.RelayConcurrency > 0 {
		rin.Concurrency = cfg.RelayConcurrency
	}
	var wake <-chan struct{}
	if cfg.DBURL != "" {
		w, stop, err := inbox.Listen(cfg.DBURL)
		if err != nil {
			return nil, err
		}
		wake, s.stopWake = w, stop
	}
	r := &relay.Relay{Inbox: rin, Temporal: rc, Log: log, Batch: cfg.RelayBatch, Poll: 200 * time.Millisecond, Wake: wake,
		Subjects: Subjects}
	rctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() { defer close(s.relayed); _ = r.Run(rctx) }()
	return s, nil
}

// startIngress serves the Account Status Change webhook with a real verifier
// (the key is served in-process) on a loopback port.
func (s *Setflow) startIngress(cfg Config, log *slog.Logger) error {
	var err error
	if s.key, err = simulator.NewKey(); err != nil {
		return err
	}
	keys, err := secevent.NewStaticKeys(benchIssuer, s.key.JWKS())
	if err != nil {
		return err
	}
	v, err := secevent.NewVerifier(secevent.Config{Issuer: benchIssuer, Audiences: []string{benchAudience}, Keys: keys})
	if err != nil {
		return err
	}
	in := inbox.NewPostgres(cfg.DB)
	isrv := &ingress.Server{Inbox: in, SETs: v, Log: log, Ready: cfg.DB.PingContext}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	s.httpSrv = ingress.HTTPServer(l.Addr().String(), isrv.Handler())
	go func() { _ = s.httpSrv.Serve(l) }()
	s.url = "http://" + l.Addr().String() + ingress.PathAccountStatus
	s.http = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16, DisableCompression: true}}
	return nil
}

// Subjects keys the subject hashes of the bench's worker and relay (they must
// agree: the relay names a user's stream by it).
var Subjects = audit.SubjectHasher{Key: []byte("setflow-bench-audit-key")}

// WorkerConfig is the bench's worker: the production defaults (Postgres
// sessions, the default policy; no email, CRM or Kakao API) keyed like its
// relay, with the blast-radius guard off (the bench revokes far more than a
// day's share of users on purpose).
func WorkerConfig() config.Worker {
	cfg := config.DefaultWorker()
	cfg.AuditKey.Key = string(Subjects.Key)
	cfg.Reactions.GuardLimit = 0
	return cfg
}

// Close stops relay, worker, ingress and connections.
func (s *Setflow) Close() {
	if s.cancel != nil {
		s.cancel()
		<-s.relayed
	}
	if s.stopWake != nil {
		s.stopWake()
	}
	if s.workers != nil {
		s.workers.Stop()
	}
	if s.closeActs != nil {
		s.closeActs()
	}

	if s.httpSrv != nil {
		_ = s.httpSrv.Close()
	}
	for _, c := range s.clients {
		c.Close()
	}
}

// Run sends n events (alternately account-disabled for a hijacked account —
// revoke sessions, lock account, security notice — and credential-change —
// revoke sessions, password notice) for n distinct users, each with a session
// to revoke, and measures from the first POST to the last completed reaction:
// the events run in their users' streams, which do not complete with an
// event (they wait for the user's next one), so a reaction counts as
// completed when its "<event name>/completed" audit row is written, after
// every step. Afterwards it checks the audit trail and the sessions.
func (s *Setflow) Run(ctx context.Context, n int, prefix string) (Result, error) {
	tokens := make([]string, n)
	now := time.Now()
	for i := range n {
		set := simulator.SET{Issuer: benchIssuer, Audience: benchAudience, UserID: fmt.Sprintf("%s-u%d", prefix, i),
			EventType: "credential-change", JTI: fmt.Sprintf("%s%d", prefix, i), IssuedAt: now}
		if i%2 == 0 {
			set.EventType, set.Fields = "account-disabled", map[string]any{"reason": "hijacking"}
		}
		var err error
		if tokens[i], err = s.signWithSession(ctx, set); err != nil {
			return Result{}, err
		}
	}

	start := time.Now()
	err := forEach(ctx, 8, n, func(i int) error {
		status, body, err := simulator.Post(ctx, s.http, s.url, tokens[i])
		if err == nil && status != http.StatusAccepted {
			err = fmt.Errorf("ingress answered %d %s", status, body)
		}
		return err
	})
	if err != nil {
		return Result{}, err
	}
	if err := s.waitAudited(ctx, ingress.SETKey(prefix), n); err != nil {
		return Result{}, err
	}
	res := Result{Workflows: n, Elapsed: time.Since(start)}

	// Check that the reactions did their work: 5 audit rows per
	// account-disabled (received, revoke, lock, notice, completed), 4 per
	// credential-change, and every session revoked.
	var rows, revoked int
	pr, err := auditdb.NewStore(s.db).ProgressOf(ctx, ingress.SETKey(prefix))
	if err != nil {
		return res, err
	}
	rows = pr.Rows
	if err := s.db.GetContext(ctx, &revoked, `SELECT count(*) FROM sessions WHERE user_id LIKE $1 AND revoked_at IS NOT NULL`, prefix+"-u%"); err != nil {
		return res, err
	}
	wantRows := 5*((n+1)/2) + 4*(n/2)
	if rows != wantRows || revoked != n {
		return res, fmt.Errorf("after %d reactions: %d audit rows (want %d), %d sessions revoked (want %d)", n, rows, wantRows, revoked, n)
	}
	res.Detail = fmt.Sprintf("%d audit rows, %d sessions revoked", rows, revoked)
	return res, nil
}

// waitAudited polls the audit trail until n events whose keys start with
// prefix have written their "completed" row; it fails as soon as a step of
// one failed (a step that failed parks, so the batch would never finish).
// The polls cost Postgres, not the dev server, so they do not count in the
// server's CPU time as the baseline's visibility queries do.
func (s *Setflow) waitAudited(ctx context.Context, prefix string, n int) error {
	lastDone, lastProgress := -1, time.Now()
	for {
		c, err := auditdb.NewStore(s.db).ProgressOf(ctx, prefix)
		if err != nil {
			return fmt.Errorf("count completed reactions: %w", err)
		}
		if c.Failed > 0 {
			return fmt.Errorf("%d step(s) of the batch failed (see setflow_audit)", c.Failed)
		}
		if c.Completed >= n {
			return nil
		}
		if c.Completed != lastDone {
			lastDone, lastProgress = c.Completed, time.Now()
		} else if Diagnostics != nil && time.Since(lastProgress) > 10*time.Second {
			lastProgress = time.Now()
			fmt.Fprintf(Diagnostics, "reactionbench: no reaction completed for 10 s (%d of %d): %s\n", c.Completed, n,
				s.describeUnfinished(ctx, prefix))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d of %d reactions completed: %w", c.Completed, n, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// describeUnfinished describes the stream of one event that was received but
// has not completed.
func (s *Setflow) describeUnfinished(ctx context.Context, prefix string) string {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	hash, ok, err := auditdb.NewStore(s.db).Unfinished(cctx, prefix)
	if err != nil {
		return err.Error()
	}
	if !ok {
		return "every event received so far has completed: the rest wait in the inbox or the relay"
	}
	return describe(cctx, s.observer, workflows.UserStreamID(hash), "")
}

// Report prints the two figures and their ratio next to the target, and the
// CPU each kind cost per workflow.
func Report(w io.Writer, base, sf Result) {
	ratio := Ratio(base, sf)
	verdict := "ok"
	if ratio < Target {
		verdict = "BELOW TARGET"
	}
	fmt.Fprintf(w, "  %-34s %7.1f workflows/s  (%d in %s)   product.md: ≈ %.0f/s on the 2-core machine\n",
		fmt.Sprintf("baseline (no-op, %d activities)", NoopActivities), base.PerSec(), base.Workflows,
		base.Elapsed.Round(time.Millisecond), BaselineTarget)
	fmt.Fprintf(w, "  %-34s %7.1f reactions/s  (%d in %s; %s)\n", "setflow reactions", sf.PerSec(), sf.Workflows,
		sf.Elapsed.Round(time.Millisecond), sf.Detail)
	fmt.Fprintf(w, "  %-34s %7.2f×   target ≥ %.1f× baseline: %s\n", "ratio", ratio, Target, verdict)
	per := func(r Result) string {
		if r.Workflows == 0 {
			return "-"
		}
		return fmt.Sprintf("server %5.1f ms + this process %5.1f ms", ms(r.ServerCPUPerWorkflow()), ms(r.ProcessCPU/time.Duration(r.Workflows)))
	}
	fmt.Fprintf(w, "  %-34s baseline: %s;  setflow: %s (Postgres not counted)\n", "CPU per workflow", per(base), per(sf))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Ratio is setflow's throughput over the baseline's.
func Ratio(base, sf Result) float64 {
	if base.PerSec() == 0 {
		return 0
	}
	return sf.PerSec() / base.PerSec()
}
