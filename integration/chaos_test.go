package integration

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	sdkworker "go.temporal.io/sdk/worker"

	"github.com/setflow/setflow/activities"
	"github.com/setflow/setflow/crm"
	"github.com/setflow/setflow/inbox"
	"github.com/setflow/setflow/ingress"
	"github.com/setflow/setflow/internal/devserver"
	"github.com/setflow/setflow/internal/testenv"
	"github.com/setflow/setflow/mailer"
	"github.com/setflow/setflow/relay"
	"github.com/setflow/setflow/secevent"
	"github.com/setflow/setflow/sessions"
	"github.com/setflow/setflow/simulator"
	"github.com/setflow/setflow/worker"
	"github.com/setflow/setflow/workflows"
)

// TestChaosKillAndRestart runs a load of distinct events — account-disabled
// (hijacking) and credential-change SETs through the ingress, and unlink
// webhooks — and, while it runs, kills and restarts each moving part, each at
// its worst moment (a crash point holds a call right after its side effect
// and before it can be reported, until the kill):
//
//   - the worker, while it holds a session revocation, a CRM write and an
//     email that have happened but are not reported: its connection is cut
//     and it is stopped without a goodbye (results of running activities and
//     workflow tasks are lost, its sticky queue is not released), then a new
//     worker set starts;
//   - the relay, after Temporal accepted a Signal-With-Start of a user's
//     stream and before the inbox row is marked dispatched: its context is
//     cancelled, so the claim rolls back, then a new relay starts (and
//     signals the event again, which the stream must skip);
//   - the Temporal dev server: SIGKILL, then a new process on the same port
//     and the same SQLite file (WAL), so its state survives as in production;
//   - the ingress, while it holds deliveries it has stored but not answered:
//     their connections are cut and it stops listening, then it listens again
//     on the same address.
//
// The senders behave like Kakao: they retry on connection errors and 5xx and
// count only a 2xx as accepted. Afterwards every accepted event must have
// exactly one inbox row, been taken by its user's one stream (one run), and
// have one "received" audit row, each expected step once and its "completed"
// row; side effects that are not unique by construction must have happened
// exactly once per event: session revocations (counted by a trigger added to
// this test's database) and security emails (counted in Mailpit) at most
// once. CRM writes are counted by idempotency key: each user's sync of a
// state version uses one key per call, also when it is retried after a crash,
// and the CRM stand-in applies each key once; the contact it ends with must
// be the one the user's state asks for.
//
// PostgreSQL itself is not killed: the test database lives on the machine's
// shared server, used by other tests at the same time. The ingress's answer
// to a database outage (503, nothing stored) is covered by the ingress tests
// (TestAccountStatusInboxUnreachable, TestAccountStatusInboxClosedDB).
func TestChaosKillAndRestart(t *testing.T) {
	const perKind = 100 // × 3 kinds
	start := time.Now()
	logf := func(format string, args ...any) {
		t.Helper()
		t.Logf("%6.1fs  %s", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}
	s := newStack(t)
	s.DB.SetMaxOpenConns(32)
	s.DB.SetMaxIdleConns(32)
	installRevocationLog(t, s.DB)

	mail := testenv.Mailpit(t)
	notices, err := mailer.New(mailer.Config{Host: mail.SMTPHost, Port: mail.SMTPPort, TLS: mailer.TLSNone,
		From: "setflow <security@example.test>", ServiceName: "chaos"})
	if err != nil {
		t.Fatal(err)
	}
	crmStandIn := newCRMStandIn(t)

	tempo := newChaosTemporal(t)
	observer, err := client.NewLazyClient(client.Options{HostPort: tempo.hostPort, Logger: nopLogger{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(observer.Close)

	// The events: distinct users, each with a session from before the event
	// (to be revoked) and one from after it (to be kept); SET users have an
	// email address in their state, so their reactions send a notice.
	events := chaosEvents(t, s, perKind)
	logf("%d events prepared (%d per kind)", len(events), perKind)

	// Crash points, armed one phase at a time: the first worker dies after a
	// revocation, a CRM write and an email have happened, the first relay
	// after a Signal-With-Start, the ingress after storing deliveries.
	revoked, crmWritten, mailed := newCrashPoint(), newCrashPoint(), newCrashPoint()
	acts := s.activities()
	acts.Sessions = crashingRevoker{Revoker: acts.Sessions, at: revoked}
	acts.CRM = crashingCRM{CRM: &crm.Webhook{URL: crmStandIn.URL(), Secret: crmStandIn.secret}, at: crmWritten}
	acts.Mailer = crashingMailer{Mailer: notices, at: mailed}
	started := newCrashPoint()  // the first relay, after a Signal-With-Start
	answered := newCrashPoint() // the ingress, after storing deliveries

	in := startChaosIngress(t, s)
	rel := startChaosRelay(t, s, tempo.hostPort, started)
	wrk := startChaosWorker(t, tempo.hostPort, acts, revoked, crmWritten, mailed)
	load := startKakaoSenders(in.url, events, 15, 8) // events/s: the load outlasts the kills
	t.Cleanup(load.stop)

	// (a) Worker.
	for _, p := range []*crashPoint{revoked, crmWritten, mailed} {
		p.arm(1)
	}
	load.waitAccepted(t, 40)
	for _, p := range []*crashPoint{revoked, crmWritten, mailed} {
		p.waitHeld(t, "the worker holding a revocation, a CRM write and an email")
	}
	wrk.kill()
	logf("worker killed holding a done but unreported revocation, CRM write and email (accepted %d)", load.accepted.Load())
	load.waitAccepted(t, 60)
	startChaosWorker(t, tempo.hostPort, acts)
	logf("new worker started (accepted %d)", load.accepted.Load())

	// (b) Relay.
	load.waitAccepted(t, 100)
	started.arm(1)
	started.waitHeld(t, "the relay holding a signalled stream")
	rel.kill()
	logf("relay killed after signalling a stream, before marking the entry dispatched (accepted %d)", load.accepted.Load())
	load.waitAccepted(t, 115)
	startChaosRelay(t, s, tempo.hostPort, nil)
	logf("new relay started (accepted %d)", load.accepted.Load())

	// (c) Temporal. The ingress keeps accepting while it is down.
	load.waitAccepted(t, 150)
	tempo.kill(t)
	logf("temporal dev server killed (accepted %d)", load.accepted.Load())
	load.waitAccepted(t, 170)
	tempo.restart(t)
	logf("temporal dev server restarted on %s with the same database (accepted %d)", tempo.hostPort, load.accepted.Load())

	// (d) Ingress: cut the connections of requests in flight.
	load.waitAccepted(t, 210)
	answered.arm(3)
	in.hold(answered)
	answered.waitHeld(t, "the ingress holding stored, unanswered deliveries")
	failedBefore := load.retries.Load()
	in.kill()
	logf("ingress killed with %d stored deliveries unanswered (accepted %d)", answered.held.Load(), load.accepted.Load())
	eventually(t, 30*time.Second, "senders noticing the ingress is gone", func() bool { return load.retries.Load() >= failedBefore+5 })
	in.restart(t)
	logf("ingress listening again on %s (accepted %d)", in.addr, load.accepted.Load())

	load.wait(t)
	accepted, rejected := load.result()
	logf("load done: %d accepted, %d rejected, %d retried sends (connection errors or 5xx)",
		len(accepted), len(rejected), load.retries.Load())
	if len(rejected) > 0 || len(accepted) != len(events) {
		t.Fatalf("%d of %d events accepted; refused: %v", len(accepted), len(events), rejected)
	}

	// Everything drains.
	eventually(t, 150*time.Second, "every inbox entry dispatched", func() bool {
		var n int
		return s.DB.Get(&n, `SELECT count(*) FROM setflow_inbox WHERE status = 'dispatched'`) == nil && n >= len(events)
	})
	logf("all inbox entries dispatched")
	eventually(t, 150*time.Second, "every event completed", func() bool {
		var n int
		return s.DB.Get(&n, `SELECT count(*) FROM setflow_audit WHERE step LIKE '%/completed'`) == nil && n >= len(events)
	})
	logf("all events completed")
	var synced []string
	for _, e := range events {
		if chaosSyncs[e.kind] {
			synced = append(synced, subjects.Hash(testIssuer, e.user))
		}
	}
	// Through means synced and audited: the stream writes the sync's audit
	// row after the activity recorded the version.
	eventually(t, 150*time.Second, "every CRM sync through", func() bool {
		var n int
		return s.DB.Get(&n, `SELECT count(*) FROM setflow_user_state u
			WHERE subject_hash = ANY($1) AND version > 0 AND crm_version >= version
			  AND EXISTS (SELECT 1 FROM setflow_audit a WHERE a.event_key = $2 || u.subject_hash AND a.step = 'crm-sync/v' || u.crm_version)`,
			pq.Array(synced), workflows.CRMSyncKeyPrefix) == nil && n >= len(synced)
	})
	logf("all CRM syncs through")

	checkChaosOutcome(t, s, observer, events, crmStandIn, mail)
	logf("checked: no event lost, no side effect twice")
}

// chaosUnlinkWindow makes the unlink webhook's dedupe bucket the same for the
// whole test, so that each event's key is known in advance: a sender's retry
// must hit the first delivery's key even when it comes later than the
// (default, one-minute) window, as it may while the ingress is down. Every
// user is unlinked once here, so the window merges nothing else.
const chaosUnlinkWindow = 200 * 365 * 24 * time.Hour

// chaosSyncs says which events change the contact the CRM should hold, so
// that their user's stream syncs the CRM: an unlink (the link) and
// account-disabled (the lock). A credential change leaves the state as it is.
var chaosSyncs = map[string]bool{"user-unlinked": true, "account-disabled": true, "credential-change": false}

type chaosEvent struct {
	kind  string // account-disabled, credential-change or user-unlinked
	user  string
	key   string // the inbox dedupe key
	token string // signed SET; empty for unlink
	hook  simulator.Delivery
}

func chaosEvents(t *testing.T, s *stack, perKind int) []chaosEvent {
	t.Helper()
	now := time.Now()
	var events []chaosEvent
	for i := range 3 * perKind {
		e := newChaosEvent(t, s, fmt.Sprintf("77%05d", i), i, now)
		if e.token != "" {
			// In the user's state: the profile row is its projection.
			s.seedProfile(e.user, chaosEmail(e.user), "user "+e.user)
		}
		s.insertSession(e.user+"-old", e.user, now.Add(-time.Hour))
		s.insertSession(e.user+"-later", e.user, now.Add(time.Hour))
		events = append(events, e)
	}
	return events
}

// newChaosEvent makes the i-th event of a run, for user: in turn a hijacking
// account-disabled SET, a credential-change SET and an unlink webhook, each
// sent at now.
func newChaosEvent(t *testing.T, s *stack, user string, i int, now time.Time) chaosEvent {
	t.Helper()
	e := chaosEvent{user: user}
	if i%3 == 2 {
		e.kind = "user-unlinked"
		e.hook = simulator.Delivery{Path: ingress.PathUnlink, Encoding: simulator.EncodingForm, AdminKey: webhookAdminKey,
			Fields: map[string]any{"app_id": webhookAppID, "user_id": e.user, "referrer_type": "UNLINK_FROM_APPS"}}
		key, err := ingress.UnlinkKey(subjects.Key, ingress.Unlink{AppID: webhookAppID, UserID: e.user, ReferrerType: "UNLINK_FROM_APPS"},
			now, chaosUnlinkWindow)
		if err != nil {
			t.Fatal(err)
		}
		e.key = key
		return e
	}
	set := simulator.SET{Issuer: testIssuer, Audience: testAudience, UserID: e.user, EventType: "credential-change",
		JTI: simulator.NewID(), IssuedAt: now}
	if i%3 == 0 {
		set.EventType, set.Fields = "account-disabled", map[string]any{"reason": "hijacking"}
	}
	claims, err := set.Claims()
	if err != nil {
		t.Fatal(err)
	}
	if e.token, err = s.Key.Sign(claims); err != nil {
		t.Fatal(err)
	}
	e.kind, e.key = set.EventType, ingress.SETKey(set.JTI)
	return e
}

func chaosEmail(user string) string { return "u" + user + "@example.test" }

// installRevocationLog adds a trigger that logs every change of a session's
// revoked_at: a second revocation of the same session, or one that moved its
// time, would show as a second row.
func installRevocationLog(t *testing.T, db *sqlx.DB) {
	t.Helper()
	for _, q := range []string{
		`CREATE TABLE chaos_revocations (session_id text NOT NULL, user_id text NOT NULL, revoked_at timestamptz,
			logged_at timestamptz NOT NULL DEFAULT clock_timestamp())`,
		`CREATE FUNCTION chaos_log_revocation() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.revoked_at IS DISTINCT FROM OLD.revoked_at THEN
				INSERT INTO chaos_revocations (session_id, user_id, revoked_at) VALUES (NEW.id, NEW.user_id, NEW.revoked_at);
			END IF;
			RETURN NEW;
		END $$`,
		`CREATE TRIGGER chaos_log_revocation AFTER UPDATE ON sessions FOR EACH ROW EXECUTE FUNCTION chaos_log_revocation()`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
}

// chaosTemporal is a dev server whose state lives in a SQLite file, so that a
// killed server restarts where it was.
type chaosTemporal struct {
	hostPort string
	opts     devserver.Options
	mu       sync.Mutex
	srv      *devserver.Server
}

func newChaosTemporal(t *testing.T) *chaosTemporal {
	t.Helper()
	ct := &chaosTemporal{hostPort: fmt.Sprintf("127.0.0.1:%d", freePort(t))}
	ct.opts = devserver.Options{Bin: testenv.TemporalBinary(t), HostPort: ct.hostPort,
		DBFile: filepath.Join(t.TempDir(), "temporal.db"), Pragmas: []string{"journal_mode=wal"}}
	ct.restart(t)
	t.Cleanup(func() {
		ct.mu.Lock()
		defer ct.mu.Unlock()
		if ct.srv != nil {
			if t.Failed() {
				t.Logf("temporal dev server output:\n%s", ct.srv.Output())
			}
			_ = ct.srv.Kill()
		}
	})
	return ct
}

func (ct *chaosTemporal) kill(t *testing.T) {
	t.Helper()
	ct.mu.Lock()
	defer ct.mu.Unlock()
	if err := ct.srv.Kill(); err != nil {
		t.Fatal(err)
	}
	ct.srv = nil
}

func (ct *chaosTemporal) restart(t *testing.T) {
	t.Helper()
	ct.mu.Lock()
	defer ct.mu.Unlock()
	var err error
	for attempt := 0; attempt < 3; attempt++ { // the port may take a moment to free up
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		ct.srv, err = devserver.Start(ctx, ct.opts)
		cancel()
		if err == nil {
			return
		}
		time.Sleep(time.Second)
	}
	t.Fatalf("start temporal dev server: %v", err)
}

// chaosIngress serves the SET and unlink routes on a fixed address, so that
// senders find it again after a restart.
type chaosIngress struct {
	addr, url string
	handler   http.Handler
	mu        sync.Mutex
	ts        *httptest.Server
	cut       atomic.Pointer[crashPoint]
}

func startChaosIngress(t *testing.T, s *stack) *chaosIngress {
	t.Helper()
	keys, err := secevent.NewStaticKeys(testIssuer, s.Key.JWKS())
	if err != nil {
		t.Fatal(err)
	}
	v, err := secevent.NewVerifier(secevent.Config{Issuer: testIssuer, Audiences: []string{testAudience}, Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	srv := &ingress.Server{Inbox: s.Inbox, SETs: v, Log: s.log, Ready: s.DB.PingContext,
		Kakao: ingress.Kakao{AdminKeys: []string{webhookAdminKey}, AppID: webhookAppID, Issuer: testIssuer, UnlinkWindow: chaosUnlinkWindow,
			KeyHash: subjects.Key}}
	in := &chaosIngress{}
	inner := srv.Handler()
	// A crash point between storing and answering: a held delivery is in the
	// inbox, and its sender never hears so.
	in.handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		inner.ServeHTTP(rec, r)
		if p := in.cut.Load(); p != nil && rec.Code/100 == 2 && p.reached(r.Context()) {
			panic(http.ErrAbortHandler) // the connection closes without an answer
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	})
	in.ts = httptest.NewServer(in.handler)
	in.addr, in.url = in.ts.Listener.Addr().String(), in.ts.URL
	t.Cleanup(func() {
		in.mu.Lock()
		defer in.mu.Unlock()
		if in.ts != nil {
			in.ts.Close()
		}
	})
	return in
}

// hold arms the crash point between storing and answering.
func (in *chaosIngress) hold(p *crashPoint) { in.cut.Store(p) }

// kill cuts every connection, including those of requests being handled, and
// stops listening.
func (in *chaosIngress) kill() {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.ts.CloseClientConnections()
	if p := in.cut.Swap(nil); p != nil {
		p.crash()
	}
	in.ts.Close()
	in.ts = nil
}

func (in *chaosIngress) restart(t *testing.T) {
	t.Helper()
	var l net.Listener
	eventually(t, 10*time.Second, "the ingress address to be free again", func() bool {
		var err error
		l, err = net.Listen("tcp", in.addr)
		return err == nil
	})
	ts := httptest.NewUnstartedServer(in.handler)
	ts.Listener.Close()
	ts.Listener = l
	ts.Start()
	in.mu.Lock()
	in.ts = ts
	in.mu.Unlock()
}

// chaosRelay is one relay with its own Temporal connection.
type chaosRelay struct {
	cancel  context.CancelFunc
	done    chan struct{}
	c       client.Client
	started *crashPoint
	once    sync.Once
}

// startChaosRelay starts a relay; with a crash point it holds a delivery
// after Temporal accepted the start until the relay is killed.
func startChaosRelay(t *testing.T, s *stack, hostPort string, started *crashPoint) *chaosRelay {
	t.Helper()
	c, err := client.NewLazyClient(client.Options{HostPort: hostPort, Logger: nopLogger{}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &relay.Relay{Inbox: inbox.NewPostgres(s.DB), Temporal: c, Log: s.log, Poll: 100 * time.Millisecond, Subjects: subjects,
		StartTimeout: 2 * time.Second, Backoff: func(int) time.Duration { return 300 * time.Millisecond }}
	cr := &chaosRelay{cancel: cancel, done: make(chan struct{}), c: c, started: started}
	if started != nil {
		r.Temporal = crashingStarter{Starter: c, at: started}
		r.StartTimeout = time.Minute // the hold must outlast the kill, not time out
	}
	go func() { defer close(cr.done); _ = r.Run(ctx) }()
	t.Cleanup(cr.kill)
	return cr
}

// kill cancels the relay wherever it is (a claim in flight rolls back) and
// drops its connection.
func (r *chaosRelay) kill() {
	r.once.Do(func() {
		r.cancel()
		if r.started != nil {
			r.started.crash()
		}
		<-r.done
		r.c.Close()
	})
}

// chaosWorker is one worker process's worker set and connection.
type chaosWorker struct {
	c      client.Client
	ws     *worker.Set
	points []*crashPoint
	once   sync.Once
}

// startChaosWorker starts a worker set; the crash points are the ones it dies at.
func startChaosWorker(t *testing.T, hostPort string, acts *activities.Activities, points ...*crashPoint) *chaosWorker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.DialContext(ctx, client.Options{HostPort: hostPort, Logger: nopLogger{}})
	if err != nil {
		t.Fatal(err)
	}
	ws := worker.New(c, acts, workerOptions(sdkworker.Options{}))
	ws.CRMRate = 200 // the stand-in has no rate limit; keep the test short
	if err := ws.Start(); err != nil {
		c.Close()
		t.Fatal(err)
	}
	w := &chaosWorker{c: c, ws: ws, points: points}
	t.Cleanup(w.kill)
	return w
}

// kill cuts the worker's connection first, so that nothing it was doing can
// be reported any more, then stops it: running activities are cancelled,
// their results lost, and the server only learns of it by timeouts, as after
// a crash.
func (w *chaosWorker) kill() {
	w.once.Do(func() {
		w.c.Close()
		// Stop first: it cancels the running activities' contexts, so the
		// steps held at a crash point see a dead process (nothing they do
		// afterwards, like releasing a claim, reaches the database), as a
		// killed process would. Releasing them first let a step run on.
		w.ws.Stop()
		for _, p := range w.points {
			p.crash()
		}
	})
}

// crmStandIn implements the documented receiving side of crm.Webhook: it
// verifies the signature, applies each idempotency key once and answers a
// repeat with 200. It fails the first attempt of every tenth key with 503, so
// that retries happen outside the crashes too. Its ledger records the applied
// keys per contact (a sync retried under a new key would show as two) and
// keeps the contacts as the applied documents left them.
type crmStandIn struct {
	ts     *httptest.Server
	secret []byte
	crmLedger
}

func newCRMStandIn(t *testing.T) *crmStandIn {
	t.Helper()
	c := &crmStandIn{secret: []byte("chaos-crm-secret")}
	c.init()
	c.ts = httptest.NewServer(http.HandlerFunc(c.serve))
	t.Cleanup(c.ts.Close)
	return c
}

func (c *crmStandIn) URL() string { return c.ts.URL }

func (c *crmStandIn) serve(w http.ResponseWriter, r *http.Request) {
	doc, ok := readCRMDocument(w, r, c.secret)
	if !ok {
		return
	}
	key := doc.IdempotencyKey
	c.mu.Lock()
	defer c.mu.Unlock()
	c.requests[key]++
	h := fnv.New32a()
	h.Write([]byte(key))
	if c.requests[key] == 1 && h.Sum32()%10 == 0 {
		http.Error(w, "try again", http.StatusServiceUnavailable)
		return
	}
	c.applyOnce(doc)
	w.WriteHeader(http.StatusOK)
}

// checkChaosOutcome asserts that nothing was lost and nothing happened twice
// (checkReactionOutcome), and that the crash windows were hit.
func checkChaosOutcome(t *testing.T, s *stack, c client.Client, events []chaosEvent, crmStandIn *crmStandIn, mail *testenv.MailpitServer) {
	t.Helper()
	o := checkReactionOutcome(t, s, c, events, &crmStandIn.crmLedger, mail, outcomeOptions{})
	// The worker's crash points happened: a revocation, an email and a CRM
	// write were done by the killed worker and retried by the next one.
	if o.revokedOnRetry == 0 || o.noticeRepeats == 0 || o.crmReplays == 0 {
		t.Errorf("crash windows not exercised: %d revocations found done on retry, %d notices sent again, %d CRM repeats",
			o.revokedOnRetry, o.noticeRepeats, o.crmReplays)
	}
	t.Logf("outcome: %d events, %d inbox rows, %d user streams, %d audit rows (chain intact), %d sessions revoked once "+
		"(%d found already revoked by a crashed attempt), %d CRM writes applied (%d repeated requests deduplicated by key), "+
		"%d emails for %d notices (%d sent again after an attempt whose delivery was unknown, same Message-ID)",
		o.events, o.inboxRows, o.streams, o.auditRows, o.revocations, o.revokedOnRetry, o.crmApplied, o.crmReplays,
		o.emails, o.notices, o.noticeRepeats)
}

func countWorkflows(ctx context.Context, c client.Client, query string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := c.CountWorkflow(ctx, &workflowservice.CountWorkflowExecutionsRequest{Query: query})
	if err != nil {
		return 0, err
	}
	return int(resp.GetCount()), nil
}

// eventually polls cond until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// crashPoint holds the calls that reach it while armed — right after their
// side effect, before they can report it — until crash: the moment a process
// would die. Calls pass while it is not armed.
type crashPoint struct {
	mu      sync.Mutex
	armed   int
	held    atomic.Int64
	release chan struct{}
	once    sync.Once
}

func newCrashPoint() *crashPoint { return &crashPoint{release: make(chan struct{})} }

// arm makes the next n calls wait for crash.
func (p *crashPoint) arm(n int) {
	p.mu.Lock()
	p.armed += n
	p.mu.Unlock()
}

// reached reports whether the call was held (and so must not report success).
func (p *crashPoint) reached(ctx context.Context) bool {
	p.mu.Lock()
	if p.armed == 0 {
		p.mu.Unlock()
		return false
	}
	p.armed--
	p.mu.Unlock()
	p.held.Add(1)
	select {
	case <-p.release:
	case <-ctx.Done():
	}
	return true
}

func (p *crashPoint) crash() { p.once.Do(func() { close(p.release) }) }

func (p *crashPoint) waitHeld(t *testing.T, what string) {
	t.Helper()
	p.mu.Lock()
	want := p.held.Load() + int64(p.armed)
	p.mu.Unlock()
	eventually(t, 60*time.Second, what, func() bool { return p.held.Load() >= want })
}

var errCrashed = errors.New("the process died here")

type crashingRevoker struct {
	sessions.Revoker
	at *crashPoint
}

func (r crashingRevoker) Revoke(ctx context.Context, userID string, createdBefore time.Time) (int64, error) {
	n, err := r.Revoker.Revoke(ctx, userID, createdBefore)
	if err == nil && r.at.reached(ctx) {
		return 0, errCrashed
	}
	return n, err
}

type crashingCRM struct {
	activities.CRM
	at *crashPoint
}

func (c crashingCRM) Upsert(ctx context.Context, idempotencyKey string, contact crm.Contact) error {
	err := c.CRM.Upsert(ctx, idempotencyKey, contact)
	if err == nil && c.at.reached(ctx) {
		return errCrashed
	}
	return err
}

type crashingMailer struct {
	activities.Mailer
	at *crashPoint
}

func (m crashingMailer) Send(ctx context.Context, n mailer.Notice) (string, error) {
	id, err := m.Mailer.Send(ctx, n)
	if err == nil && m.at.reached(ctx) {
		// The process dies mid-send: whatever the step still does sees an
		// interrupted send (as its context ending would show it), whether the
		// worker's stop or the crash point let it go first.
		return "", errors.Join(errCrashed, context.Canceled)
	}
	return id, err
}

type crashingStarter struct {
	relay.Starter
	at *crashPoint
}

func (s crashingStarter) ExecuteWorkflow(ctx context.Context, o client.StartWorkflowOptions, wf any, args ...any) (client.WorkflowRun, error) {
	run, err := s.Starter.ExecuteWorkflow(ctx, o, wf, args...)
	if err == nil && s.at.reached(ctx) {
		return nil, errCrashed
	}
	return run, err
}

func (s crashingStarter) SignalWithStartWorkflow(ctx context.Context, workflowID, signalName string, signalArg any,
	o client.StartWorkflowOptions, wf any, args ...any) (client.WorkflowRun, error) {
	run, err := s.Starter.SignalWithStartWorkflow(ctx, workflowID, signalName, signalArg, o, wf, args...)
	if err == nil && s.at.reached(ctx) {
		return nil, errCrashed
	}
	return run, err
}

// checkOneStreamPerEvent checks that no reaction workflow ran and that the
// stream of each event's user (one user per event) ran once, running or
// completed; it returns the events by subject hash.
func checkOneStreamPerEvent(t *testing.T, ctx context.Context, c client.Client, keys map[string]chaosEvent) map[string]chaosEvent {
	t.Helper()
	if n, err := countWorkflows(ctx, c, "WorkflowType = 'Reaction'"); err != nil || n != 0 {
		t.Errorf("%d reaction workflows (%v), want none", n, err)
	}
	runs := map[string][]enums.WorkflowExecutionStatus{}
	var token []byte
	for {
		resp, err := c.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
			Query: "WorkflowType = 'UserStream'", PageSize: 1000, NextPageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		for _, ex := range resp.Executions {
			runs[ex.Execution.WorkflowId] = append(runs[ex.Execution.WorkflowId], ex.Status)
		}
		if token = resp.NextPageToken; len(token) == 0 {
			break
		}
	}
	if len(runs) != len(keys) {
		t.Errorf("%d user stream ids, want %d", len(runs), len(keys))
	}
	byHash := map[string]chaosEvent{}
	for k, e := range keys {
		h := subjects.Hash(testIssuer, e.user)
		byHash[h] = e
		st := runs[workflows.UserStreamID(h)]
		if len(st) != 1 || (st[0] != enums.WORKFLOW_EXECUTION_STATUS_RUNNING && st[0] != enums.WORKFLOW_EXECUTION_STATUS_COMPLETED) {
			t.Errorf("event %s: stream runs %v, want one running or completed", k, st)
		}
	}
	return byHash
}
