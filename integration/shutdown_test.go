package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/testsuite"

	"github.com/setflow/setflow/audit"
	"github.com/setflow/setflow/audit/auditdb"
	"github.com/setflow/setflow/crm"
	"github.com/setflow/setflow/ingress"
	"github.com/setflow/setflow/internal/testenv"
	"github.com/setflow/setflow/simulator"
	"github.com/setflow/setflow/workflows"
)

// TestGracefulShutdown signals real setflow processes (the binary built from
// this tree) with SIGTERM while they are busy, and checks what the issue
// promises: the ingress fails readiness first and still answers a request in
// flight; the relay finishes the batch it claimed and starts no other; the
// worker stops polling, lets a running CRM call finish, and an activity cut
// off by a short stop timeout reports its failure to Temporal before the
// process exits, so that its retry starts at once, not after its 30 s
// StartToClose timeout.
func TestGracefulShutdown(t *testing.T) {
	e := newSDEnv(t)
	t.Run("ingress", e.testIngress)
	t.Run("relay", e.testRelay)
	t.Run("worker", e.testWorker)
}

// sdEnv is what the shutdown tests share: the binary, a database, a Temporal
// dev server, a JWKS endpoint and the keys every process gets.
type sdEnv struct {
	bin      string
	db       *sqlx.DB
	dbURL    string
	temporal *testsuite.DevServer
	key      *simulator.Key
	jwks     *sdJWKS
	auditKey string
	codec    string
}

func newSDEnv(t *testing.T) *sdEnv {
	// Build while the database and Temporal start.
	start := time.Now()
	bin := filepath.Join(t.TempDir(), "setflow")
	root := testenv.RepoRoot(t)
	built := make(chan error, 1)
	go func() { built <- goBuildSetflow(context.Background(), root, bin, false) }()
	db, url := testenv.Database(t)
	srv := testenv.Temporal(t, "")
	key, err := simulator.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	jwks := &sdJWKS{h: key.JWKSHandler()}
	ts := httptest.NewServer(jwks)
	t.Cleanup(ts.Close)
	jwks.url = ts.URL
	if err := <-built; err != nil {
		t.Fatal(err)
	}
	t.Logf("binary built, database and Temporal up in %v", time.Since(start).Round(time.Millisecond))
	return &sdEnv{bin: bin, db: db, dbURL: url, temporal: srv, key: key, jwks: jwks,
		auditKey: sdRandom(t), codec: "k1:" + sdRandom(t)}
}

func sdRandom(t *testing.T) string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}

// environ is the test's environment without setflow's and Temporal's
// variables, plus the shared settings and vars.
func (e *sdEnv) environ(vars map[string]string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SETFLOW_") && !strings.HasPrefix(kv, "TEMPORAL_") {
			env = append(env, kv)
		}
	}
	base := map[string]string{
		"SETFLOW_DATABASE_URL": e.dbURL,
		"SETFLOW_AUDIT_KEY":    e.auditKey,
		"SETFLOW_CODEC_KEYS":   e.codec,
		"SETFLOW_ISSUER":       testIssuer,
		"SETFLOW_AUDIENCES":    testAudience,
		"SETFLOW_JWKS_URL":     e.jwks.url,
	}
	if e.temporal != nil {
		// Without a dev server (a production-shaped Temporal), vars name it.
		base["TEMPORAL_ADDRESS"] = e.temporal.FrontendHostPort()
	}
	for k, v := range vars {
		base[k] = v
	}
	for k, v := range base {
		env = append(env, k+"="+v)
	}
	return env
}

// sdProc is one running setflow process.
type sdProc struct {
	name   string
	cmd    *exec.Cmd
	out    *sdBuffer
	done   chan struct{}
	exited time.Time
	err    error
}

func (e *sdEnv) start(t *testing.T, name string, vars map[string]string, args ...string) *sdProc {
	t.Helper()
	cmd := exec.Command(e.bin, args...)
	cmd.Env = e.environ(vars)
	return startProc(t, name, cmd, 0)
}

// startProc starts cmd in a temporary directory, collects its output, and
// kills it when the test ends; a failed test logs its output (the last
// logLines lines; 0: all of it).
func startProc(t *testing.T, name string, cmd *exec.Cmd, logLines int) *sdProc {
	t.Helper()
	p := &sdProc{name: name, out: &sdBuffer{}, done: make(chan struct{}), cmd: cmd}
	p.cmd.Dir = t.TempDir()
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		p.exited = time.Now()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			out := p.out.String()
			if logLines > 0 {
				out = tail(out, logLines)
			}
			t.Logf("%s output:\n%s", name, out)
		}
	})
	return p
}

func (p *sdProc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

func (p *sdProc) sigterm(t *testing.T) time.Time {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM %s: %v", p.name, err)
	}
	return time.Now()
}

// waitExit waits for the process to end and fails unless it exited with 0.
func (p *sdProc) waitExit(t *testing.T, timeout time.Duration) time.Time {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("%s still running %v after SIGTERM", p.name, timeout)
	}
	if p.err != nil {
		t.Fatalf("%s exited with %v, want a clean exit", p.name, p.err)
	}
	return p.exited
}

// waitLog waits for a line of the process's log containing s.
func (p *sdProc) waitLog(t *testing.T, s string) {
	t.Helper()
	sdEventually(t, 30*time.Second, p.name+" to log "+s, func() bool {
		if !p.running() {
			t.Fatalf("%s exited early: %v", p.name, p.err)
		}
		return strings.Contains(p.out.String(), s)
	})
}

type sdBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *sdBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *sdBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func sdEventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startIngress starts `setflow ingress` and waits until it is ready.
func (e *sdEnv) startIngress(t *testing.T, vars map[string]string) (*sdProc, string) {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	all := map[string]string{"SETFLOW_LISTEN": addr}
	for k, v := range vars {
		all[k] = v
	}
	p := e.start(t, "ingress", all, "ingress")
	base := "http://" + addr
	sdEventually(t, 30*time.Second, "the ingress to be ready", func() bool {
		if !p.running() {
			t.Fatalf("ingress exited: %v", p.err)
		}
		st, _ := sdGet(base + "/readyz")
		return st == http.StatusOK
	})
	return p, base
}

func sdGet(url string) (int, error) {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// sendSET posts a signed account-disabled SET for user; it returns the
// inbox key.
func (e *sdEnv) sendSET(t *testing.T, base, user string) string {
	t.Helper()
	key, err := e.post(base, user)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func (e *sdEnv) post(base, user string) (string, error) {
	set := simulator.SET{Issuer: testIssuer, Audience: testAudience, UserID: user, EventType: "account-disabled",
		JTI: simulator.NewID(), Fields: map[string]any{"reason": "hijacking"}}
	claims, err := set.Claims()
	if err != nil {
		return "", err
	}
	token, err := e.key.Sign(claims)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, body, err := simulator.Post(ctx, nil, base+ingress.PathAccountStatus, token)
	if err != nil || st != http.StatusAccepted {
		return "", fmt.Errorf("SET for %s: %d %s %v", user, st, body, err)
	}
	return ingress.SETKey(set.JTI), nil
}

func (e *sdEnv) inboxStatus(t *testing.T, key string) string {
	t.Helper()
	var st string
	err := e.db.Get(&st, `SELECT status FROM setflow_inbox WHERE dedupe_key = $1`, key)
	if errors.Is(err, sql.ErrNoRows) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// ---------------------------------------------------------------------------

// The ingress under SIGTERM: /readyz answers 503 at once while requests are
// still served, and a request in flight (its key fetch held) is answered
// 202 and stored before the process exits cleanly.
func (e *sdEnv) testIngress(t *testing.T) {
	p, base := e.startIngress(t, map[string]string{"SETFLOW_SHUTDOWN_DELAY": "500ms", "SETFLOW_SHUTDOWN_TIMEOUT": "10s"})
	// The first delivery fetches the keys: hold that fetch so the request
	// is in flight across the signal and past the delay.
	fetching, release := e.jwks.hold()
	type answer struct {
		key string
		err error
		at  time.Time
	}
	answered := make(chan answer, 1)
	go func() {
		key, err := e.post(base, "5001")
		answered <- answer{key, err, time.Now()}
	}()
	select {
	case <-fetching:
	case <-time.After(10 * time.Second):
		t.Fatal("the delivery never fetched the keys")
	}
	sig := p.sigterm(t)
	sdEventually(t, 2*time.Second, "/readyz to answer 503", func() bool {
		st, _ := sdGet(base + "/readyz")
		return st == http.StatusServiceUnavailable
	})
	if st, err := sdGet(base + "/healthz"); st != http.StatusOK {
		t.Fatalf("during the shutdown delay /healthz answered %d %v: requests must still be served", st, err)
	}
	t.Logf("/readyz 503 %v after SIGTERM", time.Since(sig).Round(time.Millisecond))
	// Past the delay the server drains: the request is still in flight.
	time.Sleep(time.Second)
	if !p.running() {
		t.Fatal("the ingress exited with a request in flight")
	}
	release()
	var a answer
	select {
	case a = <-answered:
	case <-time.After(5 * time.Second):
		t.Fatal("the request in flight was not answered")
	}
	if a.err != nil {
		t.Fatalf("the request in flight during the stop: %v", a.err)
	}
	exited := p.waitExit(t, 10*time.Second)
	if exited.Before(a.at.Add(-50 * time.Millisecond)) {
		t.Fatalf("exited %v before the request was answered", a.at.Sub(exited))
	}
	if st := e.inboxStatus(t, a.key); st != "pending" {
		t.Fatalf("the answered delivery is %q in the inbox, want pending", st)
	}
	t.Logf("answered %v after SIGTERM, exited %v after SIGTERM", a.at.Sub(sig).Round(time.Millisecond), exited.Sub(sig).Round(time.Millisecond))
}

// sdJWKS serves the test key; hold makes the next fetch wait.
type sdJWKS struct {
	h   http.Handler
	url string
	mu  sync.Mutex
	// armed, when set, is closed when a fetch arrives; that fetch waits for
	// release (at most 1.5 s, below the verifier's 2 s fetch timeout).
	armed, release chan struct{}
}

func (j *sdJWKS) hold() (fetching <-chan struct{}, release func()) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.armed, j.release = make(chan struct{}), make(chan struct{})
	rel := j.release
	var once sync.Once
	return j.armed, func() { once.Do(func() { close(rel) }) }
}

func (j *sdJWKS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	j.mu.Lock()
	armed, release := j.armed, j.release
	j.armed = nil
	j.mu.Unlock()
	if armed != nil {
		close(armed)
		select {
		case <-release:
		case <-time.After(1500 * time.Millisecond):
		}
	}
	j.h.ServeHTTP(w, r)
}

// ---------------------------------------------------------------------------

// The relay under SIGTERM with a delivery in flight (Temporal's traffic held
// by a proxy): it waits for the delivery, marks the entry dispatched, starts
// no new batch (an entry stored after the signal stays pending) and exits
// cleanly.
func (e *sdEnv) testRelay(t *testing.T) {
	_, base := e.startIngress(t, nil)
	proxy := newSDProxy(t, e.temporal.FrontendHostPort())
	relay := e.start(t, "relay", map[string]string{"TEMPORAL_ADDRESS": proxy.addr(), "SETFLOW_SHUTDOWN_TIMEOUT": "10s"}, "relay")
	first := e.sendSET(t, base, "6001")
	sdEventually(t, 20*time.Second, "the first entry to be dispatched", func() bool { return e.inboxStatus(t, first) == "dispatched" })

	proxy.hold()
	second := e.sendSET(t, base, "6002")
	sdEventually(t, 10*time.Second, "the relay to claim the second entry and call Temporal", func() bool {
		return proxy.held() > 0 && e.claimed(t, second)
	})
	sig := relay.sigterm(t)
	time.Sleep(700 * time.Millisecond)
	if !relay.running() {
		t.Fatal("the relay exited with a delivery in flight")
	}
	third := e.sendSET(t, base, "6003")
	proxy.release()
	released := time.Now()
	exited := relay.waitExit(t, 10*time.Second)
	if st := e.inboxStatus(t, second); st != "dispatched" {
		t.Fatalf("the entry delivered during the stop is %q, want dispatched", st)
	}
	if st := e.inboxStatus(t, third); st != "pending" {
		t.Fatalf("an entry stored after SIGTERM is %q: the relay started a new batch", st)
	}
	if !strings.Contains(relay.out.String(), "stopped after finishing its batch") {
		t.Fatalf("the relay did not report finishing its batch")
	}
	t.Logf("relay exited %v after SIGTERM, %v after Temporal answered", exited.Sub(sig).Round(time.Millisecond),
		exited.Sub(released).Round(time.Millisecond))
}

// claimed reports whether a relay holds key's inbox row (its batch's lock).
func (e *sdEnv) claimed(t *testing.T, key string) bool {
	t.Helper()
	tx, err := e.db.Beginx()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback() //nolint:errcheck // read-only
	var ids []int64
	if err := tx.Select(&ids, `SELECT id FROM setflow_inbox WHERE dedupe_key = $1 AND status = 'pending' FOR UPDATE SKIP LOCKED`, key); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := tx.Get(&n, `SELECT count(*) FROM setflow_inbox WHERE dedupe_key = $1 AND status = 'pending'`, key); err != nil {
		t.Fatal(err)
	}
	return n == 1 && len(ids) == 0
}

// sdProxy forwards TCP to Temporal; hold makes it keep what the client
// sends until release.
type sdProxy struct {
	ln       net.Listener
	mu       sync.Mutex
	cond     *sync.Cond
	holding  bool
	heldSize atomic.Int64
}

func newSDProxy(t *testing.T, upstream string) *sdProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &sdProxy{ln: ln}
	p.cond = sync.NewCond(&p.mu)
	var conns sync.WaitGroup
	t.Cleanup(func() { ln.Close(); p.release(); conns.Wait() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", upstream)
			if err != nil {
				c.Close()
				continue
			}
			conns.Add(2)
			go func() { defer conns.Done(); _, _ = io.Copy(c, up); c.Close() }()
			go func() { defer conns.Done(); p.forward(up, c); up.Close() }()
			t.Cleanup(func() { c.Close(); up.Close() })
		}
	}()
	return p
}

func (p *sdProxy) addr() string { return p.ln.Addr().String() }

func (p *sdProxy) forward(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			if p.holding {
				p.heldSize.Add(int64(n))
			}
			for p.holding {
				p.cond.Wait()
			}
			p.mu.Unlock()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *sdProxy) hold() {
	p.mu.Lock()
	p.holding = true
	p.heldSize.Store(0)
	p.mu.Unlock()
}

func (p *sdProxy) held() int64 { return p.heldSize.Load() }

func (p *sdProxy) release() {
	p.mu.Lock()
	p.holding = false
	p.cond.Broadcast()
	p.mu.Unlock()
}

// ---------------------------------------------------------------------------

// The worker under SIGTERM during a slow CRM call: with the default stop
// timeout it stops polling, waits for the call, reports the activity's
// completion and exits cleanly; the next step runs at once on the next
// worker, and the CRM saw one call. With a stop timeout shorter than the
// call, the activity is cut off before the timeout, its failure reaches
// Temporal before the process exits (the activity is scheduled again, not
// left started), and the retry runs at once on the next worker instead of
// after the 30 s StartToClose timeout.
func (e *sdEnv) testWorker(t *testing.T) {
	_, base := e.startIngress(t, nil)
	e.start(t, "relay", nil, "relay")
	standIn := newSDCRM(t)
	workerVars := func(stopTimeout string) map[string]string {
		v := map[string]string{"SETFLOW_CRM": "webhook", "SETFLOW_CRM_WEBHOOK_URL": standIn.ts.URL,
			"SETFLOW_CRM_WEBHOOK_SECRET": "shutdown-test-secret"}
		if stopTimeout != "" {
			v["SETFLOW_WORKER_STOP_TIMEOUT"] = stopTimeout
		}
		return v
	}
	subjects := audit.SubjectHasher{Key: []byte(e.auditKey)}
	tc := e.temporal.Client()

	// 1. Default stop timeout (45 s): the running call finishes.
	const hold = 5 * time.Second
	standIn.holdFor("7001", hold)
	a := e.start(t, "worker-a", workerVars(""), "worker")
	a.waitLog(t, "worker running")
	e.sendSET(t, base, "7001")
	call := standIn.waitCall(t, "7001", 1)
	sig := a.sigterm(t)
	exited := a.waitExit(t, 20*time.Second)
	calls := standIn.calls("7001")
	if len(calls) != 1 || !calls[0].answered() {
		t.Fatalf("crm calls for 7001: %+v; want one, answered", calls)
	}
	if exited.Before(calls[0].end) {
		t.Fatalf("worker exited %v before the CRM call it was running ended", calls[0].end.Sub(exited))
	}
	if exited.Sub(calls[0].end) > 5*time.Second {
		t.Fatalf("worker exited %v after its last activity ended", exited.Sub(calls[0].end))
	}
	if !strings.Contains(a.out.String(), `msg="worker stopped"`) {
		t.Fatal("the worker did not report a clean stop")
	}
	t.Logf("worker a: SIGTERM %v into the call, exited %v after SIGTERM, %v after the call ended",
		sig.Sub(call.start).Round(time.Millisecond), exited.Sub(sig).Round(time.Millisecond), exited.Sub(calls[0].end).Round(time.Millisecond))
	stream1 := workflows.UserStreamID(subjects.Hash(testIssuer, "7001"))
	if pa := e.pendingSync(t, tc, stream1); pa != nil {
		t.Fatalf("the completed sync is still pending in Temporal: attempt %d, state %v", pa.attempt, pa.state)
	}

	// The next worker runs the next step (the sync's audit row) at once.
	b := e.start(t, "worker-b", workerVars("2s"), "worker")
	bStarted := time.Now()
	e.waitAudit(t, workflows.CRMSyncKeyPrefix+subjects.Hash(testIssuer, "7001"), "crm-sync/v")
	t.Logf("the step after the sync ran %v after the next worker started", time.Since(bStarted).Round(time.Millisecond))
	// Reported, not timed out: a sync whose completion was lost would be
	// retried after its 30 s timeout and call the CRM again.
	if n := len(standIn.calls("7001")); n != 1 {
		t.Fatalf("the CRM saw %d calls for 7001, want 1 (no retry)", n)
	}

	// 2. A stop timeout (2 s) shorter than the call (8 s): cut off, reported.
	standIn.holdFor("7002", 8*time.Second)
	b.waitLog(t, "worker running")
	e.sendSET(t, base, "7002")
	standIn.waitCall(t, "7002", 1)
	sig = b.sigterm(t)
	exited = b.waitExit(t, 10*time.Second)
	if took := exited.Sub(sig); took > 4*time.Second {
		t.Fatalf("worker b took %v to stop with a 2s stop timeout", took)
	}
	if c := standIn.calls("7002"); len(c) != 1 || c[0].answered() {
		t.Fatalf("crm calls for 7002 %+v: want one, cut off", c)
	}
	stream2 := workflows.UserStreamID(subjects.Hash(testIssuer, "7002"))
	pa := e.pendingSync(t, tc, stream2)
	if pa == nil || pa.attempt < 2 || pa.state == enums.PENDING_ACTIVITY_STATE_STARTED || !pa.failed {
		t.Fatalf("after the stop the sync is %+v: its failure did not reach Temporal (want attempt 2 scheduled, with a failure)", pa)
	}
	t.Logf("worker b: exited %v after SIGTERM; sync attempt %d %v", exited.Sub(sig).Round(time.Millisecond), pa.attempt, pa.state)

	standIn.holdFor("7002", 0)
	d := e.start(t, "worker-d", workerVars(""), "worker")
	retry := standIn.waitCall(t, "7002", 2)
	if gap := retry.start.Sub(exited); gap > 10*time.Second {
		t.Fatalf("the retry started %v after the stop: it waited for the StartToClose timeout", gap)
	}
	e.waitAudit(t, workflows.CRMSyncKeyPrefix+subjects.Hash(testIssuer, "7002"), "crm-sync/v")
	t.Logf("retry started %v after worker b exited", retry.start.Sub(exited).Round(time.Millisecond))

	// An idle worker stops at once.
	sig = d.sigterm(t)
	if took := d.waitExit(t, 10*time.Second).Sub(sig); took > 5*time.Second {
		t.Fatalf("an idle worker took %v to stop", took)
	}
}

type sdPending struct {
	attempt int32
	state   enums.PendingActivityState
	failed  bool
}

// pendingSync returns the user stream's pending SyncCRM activity, nil if none.
func (e *sdEnv) pendingSync(t *testing.T, c client.Client, id string) *sdPending {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := c.DescribeWorkflowExecution(ctx, id, "")
	if err != nil {
		t.Fatalf("describe %s: %v", id, err)
	}
	for _, pa := range d.PendingActivities {
		if pa.GetActivityType().GetName() == "SyncCRM" {
			return &sdPending{attempt: pa.GetAttempt(), state: pa.GetState(), failed: pa.GetLastFailure() != nil}
		}
	}
	return nil
}

// waitAudit waits for an audit row of key whose step starts with prefix.
func (e *sdEnv) waitAudit(t *testing.T, key, prefix string) {
	t.Helper()
	store := auditdb.NewStore(e.db)
	// Generous: on a loaded machine the next worker's first task can take a
	// while; that the step was not retried is checked by the calls it made.
	sdEventually(t, 90*time.Second, "audit "+prefix+"… of "+key, func() bool {
		recs, err := store.ForEvent(context.Background(), key)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			if strings.HasPrefix(r.Step, prefix) {
				return true
			}
		}
		return false
	})
}

// sdCRM stands in for a CRM webhook receiver; it holds the calls about a
// contact for as long as the test says.
type sdCRM struct {
	ts    *httptest.Server
	mu    sync.Mutex
	holds map[string]time.Duration
	log   map[string][]*sdCall
}

type sdCall struct {
	key        string
	start, end time.Time
	status     int // 0: cut off by the caller
}

func (c *sdCall) answered() bool { return c.status != 0 }

func newSDCRM(t *testing.T) *sdCRM {
	c := &sdCRM{holds: map[string]time.Duration{}, log: map[string][]*sdCall{}}
	c.ts = httptest.NewServer(http.HandlerFunc(c.serve))
	t.Cleanup(c.ts.Close)
	return c
}

func (c *sdCRM) holdFor(contact string, d time.Duration) {
	c.mu.Lock()
	c.holds[contact] = d
	c.mu.Unlock()
}

func (c *sdCRM) serve(w http.ResponseWriter, r *http.Request) {
	var doc crm.Document
	if err := json.NewDecoder(r.Body).Decode(&doc); err != nil {
		http.Error(w, "bad document", http.StatusBadRequest)
		return
	}
	call := &sdCall{key: doc.IdempotencyKey, start: time.Now()}
	id := doc.Contact.ExternalID
	c.mu.Lock()
	hold := c.holds[id]
	c.log[id] = append(c.log[id], call)
	c.mu.Unlock()
	select {
	case <-time.After(hold):
	case <-r.Context().Done():
		c.mu.Lock()
		call.end = time.Now()
		c.mu.Unlock()
		return
	}
	c.mu.Lock()
	call.end, call.status = time.Now(), http.StatusOK
	c.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

// calls returns copies of the calls about contact so far.
func (c *sdCRM) calls(contact string) []sdCall {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []sdCall
	for _, call := range c.log[contact] {
		out = append(out, *call)
	}
	return out
}

// waitCall waits for the n-th call about contact to arrive.
func (c *sdCRM) waitCall(t *testing.T, contact string, n int) sdCall {
	t.Helper()
	sdEventually(t, 30*time.Second, fmt.Sprintf("CRM call %d for %s", n, contact), func() bool { return len(c.calls(contact)) >= n })
	return c.calls(contact)[n-1]
}
