package integration

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"

	"github.com/setflow/setflow/activities"
	"github.com/setflow/setflow/audit"
	"github.com/setflow/setflow/audit/auditdb"
	"github.com/setflow/setflow/config"
	"github.com/setflow/setflow/inbox"
	"github.com/setflow/setflow/ingress"
	"github.com/setflow/setflow/internal/testenv"
	"github.com/setflow/setflow/relay"
	"github.com/setflow/setflow/secevent"
	"github.com/setflow/setflow/simulator"
	"github.com/setflow/setflow/worker"
	"github.com/setflow/setflow/workflows"
)

const (
	testIssuer   = "https://kauth.kakao.com"
	testAudience = "8c67b0d4e2e76140aa11bb22cc33dd44"
)

// stack is one running setflow: ingress on an httptest server, relay and
// worker in goroutines, all on a fresh database.
type stack struct {
	t        testing.TB
	DB       *sqlx.DB
	DBURL    string
	Key      *simulator.Key
	Ingress  *httptest.Server
	Inbox    *inbox.Postgres
	Audit    *auditdb.Store
	Temporal client.Client // nil until connected
	relayCtx context.Context
	stop     context.CancelFunc
	log      *slog.Logger
}

func testLogger() *slog.Logger {
	level := slog.LevelError
	if os.Getenv("SETFLOW_TEST_LOG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// newStack starts the database and ingress. Temporal parts are started by
// startRelay and startWorker, so that tests can run them against a server that
// is down.
func newStack(t testing.TB) *stack {
	t.Helper()
	db, url := testenv.Database(t)
	key, err := simulator.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	// The verifier fetches keys over HTTP from a JWKS endpoint, as in production.
	jwks := httptest.NewServer(key.JWKSHandler())
	t.Cleanup(jwks.Close)
	v, err := secevent.NewVerifier(secevent.Config{
		Issuer:    testIssuer,
		Audiences: []string{testAudience},
		Keys:      secevent.NewJWKS(testIssuer, secevent.JWKSOptions{URL: jwks.URL}),
	})
	if err != nil {
		t.Fatal(err)
	}
	log := testLogger()
	in := inbox.NewPostgres(db)
	srv := &ingress.Server{Inbox: in, SETs: v, Log: log, Ready: db.PingContext}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return &stack{t: t, DB: db, DBURL: url, Key: key, Ingress: ts, Inbox: in, Audit: auditdb.NewStore(db),
		relayCtx: ctx, stop: cancel, log: log}
}

// startRelay runs the relay against hostPort with a lazy client: it keeps
// retrying while nothing listens there.
func (s *stack) startRelay(hostPort string) {
	s.t.Helper()
	c, err := client.NewLazyClient(client.Options{HostPort: hostPort, Logger: nopLogger{}})
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(c.Close)
	r := &relay.Relay{Inbox: s.Inbox, Temporal: c, Log: s.log, Poll: 100 * time.Millisecond, Subjects: subjects,
		StartTimeout: 2 * time.Second,
		// Short backoff so that the catch-up after an outage is quick in tests.
		Backoff: func(int) time.Duration { return 200 * time.Millisecond }}
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(s.relayCtx) }()
	s.t.Cleanup(func() { s.stop(); <-done })
}

// workerConfig is the stack's worker configuration: the production defaults
// (every Postgres back end, the default policy) keyed like the stack's relay,
// with the blast-radius guard off (guard tests turn it on).
func (s *stack) workerConfig() config.Worker {
	cfg := config.DefaultWorker()
	cfg.AuditKey.Key = string(subjects.Key)
	cfg.Reactions.GuardLimit = 0
	// Unlinked users' data waits a month, so tests see the revocation
	// before any purge; purge tests set their own retention.
	cfg.Reactions.PurgeAfter = 30 * 24 * time.Hour
	return cfg
}

// activities returns the worker's activities as setflow worker builds them
// (worker.NewActivities) from the stack's workerConfig; tests replace the
// back ends they stand in for (CRM, mailer, Kakao client) on the result.
func (s *stack) activities() *activities.Activities { return s.activitiesWith(s.workerConfig()) }

// activitiesWith builds the activities from cfg on the stack's database.
func (s *stack) activitiesWith(cfg config.Worker) *activities.Activities {
	s.t.Helper()
	acts, closeActs, err := worker.NewActivities(context.Background(), cfg, s.DB, s.log)
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(closeActs)
	return acts
}

// startWorker runs a worker with the real activities on c.
func (s *stack) startWorker(c client.Client) { s.startWorkerWith(c, s.activities()) }

// start brings up a dev server, relay and worker.
func (s *stack) start() {
	srv := testenv.Temporal(s.t, "")
	s.startRelay(srv.FrontendHostPort())
	s.startWorker(srv.Client())
}

// send signs a Kakao-shaped SET with the stack's key and posts it.
func (s *stack) send(set simulator.SET) (string, int, string) {
	s.t.Helper()
	if set.Issuer == "" {
		set.Issuer = testIssuer
	}
	if set.Audience == "" {
		set.Audience = testAudience
	}
	if set.JTI == "" {
		set.JTI = simulator.NewID()
	}
	claims, err := set.Claims()
	if err != nil {
		s.t.Fatal(err)
	}
	token, err := s.Key.Sign(claims)
	if err != nil {
		s.t.Fatal(err)
	}
	status, body := s.post(token)
	return set.JTI, status, body
}

func (s *stack) post(token string) (int, string) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	status, body, err := simulator.Post(ctx, nil, s.Ingress.URL+ingress.PathAccountStatus, token)
	if err != nil {
		s.t.Fatal(err)
	}
	return status, body
}

// waitReaction waits for an event to be through: every event of a user's
// stream has written its "<name>/completed" audit row, or the reaction
// workflow of user-less events completed. It fails at once on a parked step.
func (s *stack) waitReaction(key string) workflows.ReactionResult {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		recs, err := s.Audit.ForEvent(ctx, key)
		if err != nil {
			s.t.Fatal(err)
		}
		var res workflows.ReactionResult
		received, completed := 0, 0
		for _, r := range recs {
			_, step, _ := strings.Cut(r.Step, "/")
			switch {
			case step == "received":
				received++
			case step == workflows.StepCompleted:
				completed++
			case strings.HasPrefix(step, "revoke_sessions") && r.Outcome == "done":
				if n, ok := r.Detail["revoked"].(float64); ok {
					res.SessionsRevoked += int64(n)
				}
			}
			if step != "received" && step != workflows.StepCompleted {
				res.Steps++
			}
		}
		if received > 0 && completed == received {
			res.Events = received
			return res
		}
		desc, err := s.Temporal.DescribeWorkflowExecution(ctx, workflows.EventWorkflowID(key), "")
		if err == nil && desc.GetWorkflowExecutionInfo().GetStatus() == enums.WORKFLOW_EXECUTION_STATUS_COMPLETED {
			if err := s.Temporal.GetWorkflow(ctx, workflows.EventWorkflowID(key), "").Get(ctx, &res); err != nil {
				s.t.Fatalf("reaction %s: %v", key, err)
			}
			return res
		}
		if e, err := s.Inbox.Get(ctx, key); err == nil && e.Status == "parked" {
			s.t.Fatalf("event %s parked; audit %s", key, s.auditSteps(key))
		}
		if ctx.Err() != nil {
			s.t.Fatalf("event %s did not complete; audit %s", key, s.auditSteps(key))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// runsOf counts the workflow runs under an id, open or closed.
func (s *stack) runsOf(key string) int {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n := 0
	var token []byte
	for {
		resp, err := s.Temporal.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
			Query:         "WorkflowId = '" + workflows.EventWorkflowID(key) + "'",
			NextPageToken: token,
		})
		if err != nil {
			s.t.Fatal(err)
		}
		n += len(resp.Executions)
		if token = resp.NextPageToken; len(token) == 0 {
			return n
		}
	}
}

// insertSession creates a session row created at the given time.
func (s *stack) insertSession(id, userID string, created time.Time) {
	s.t.Helper()
	if _, err := s.DB.Exec(`INSERT INTO sessions (id, user_id, created_at) VALUES ($1, $2, $3)`, id, userID, created); err != nil {
		s.t.Fatal(err)
	}
}

// revoked reports whether a session has been revoked.
func (s *stack) revoked(id string) bool {
	s.t.Helper()
	var at *time.Time
	if err := s.DB.Get(&at, `SELECT revoked_at FROM sessions WHERE id = $1`, id); err != nil {
		s.t.Fatal(err)
	}
	return at != nil
}

func (s *stack) inboxStatus(key string) inbox.Entry {
	s.t.Helper()
	e, err := s.Inbox.Get(context.Background(), key)
	if err != nil {
		s.t.Fatal(err)
	}
	return e
}

type nopLogger struct{}

func (nopLogger) Debug(string, ...any) {}
func (nopLogger) Info(string, ...any)  {}
func (nopLogger) Warn(string, ...any)  {}
func (nopLogger) Error(string, ...any) {}

// subjects keys the subject hashes of the test stacks (as the worker and relay do).
var subjects = audit.SubjectHasher{Key: []byte("test-audit-key")}
