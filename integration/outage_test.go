package integration

// TestOutagesUnderLoad: outages of each dependency under a steady load, with
// the worker as a real process.
//
// CI runs one round with the defaults: about two and a half minutes, plus the
// build of the setflow binary when the build cache is cold. A longer
// soak repeats the rounds with longer outages at a higher rate, e.g.:
//
//	SETFLOW_REQUIRE_INTEGRATION=1 SETFLOW_OUTAGE_ROUNDS=10 SETFLOW_OUTAGE_RATE=10 \
//	SETFLOW_OUTAGE_PG_DOWN=20s SETFLOW_OUTAGE_SMTP_STALL=2m SETFLOW_OUTAGE_CRM_DOWN=5m \
//	SETFLOW_OUTAGE_DRAIN=15m \
//	go test -race -count=1 -timeout 4h -run TestOutagesUnderLoad ./integration/
//
// Sizes (env, defaults in outageConfigFromEnv):
//   - SETFLOW_OUTAGE_RATE: events per second offered by the senders (4);
//   - SETFLOW_OUTAGE_ROUNDS: how many times the sequence of outages runs (1);
//   - SETFLOW_OUTAGE_PG_DOWN: how long PostgreSQL stays down (3s);
//   - SETFLOW_OUTAGE_SMTP_STALL: how long the SMTP server stalls, more than
//     the activity's 30 s StartToClose (40s);
//   - SETFLOW_OUTAGE_CRM_DOWN: how long the CRM answers 503 (40s);
//   - SETFLOW_OUTAGE_STEP_RETRY_FOR: the worker's SETFLOW_STEP_RETRY_FOR, the
//     retry window before a step parks; it must outlast every outage plus the
//     capped backoff (five minutes apart at most), or steps park (default
//     3 × the longest outage + 2m);
//   - SETFLOW_OUTAGE_DRAIN: how long everything may take to finish after the
//     load stops (3m, or twice the longest outage + 2m if longer).
//   - SETFLOW_PG_BIN: where initdb and pg_ctl are (else
//     /usr/lib/postgresql/<newest>/bin, else PATH).

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"go.temporal.io/sdk/client"
	"golang.org/x/sync/errgroup"

	"github.com/setflow/setflow/audit/auditdb"
	"github.com/setflow/setflow/inbox"
	"github.com/setflow/setflow/internal/pgurl"
	"github.com/setflow/setflow/internal/testenv"
	"github.com/setflow/setflow/migrations"
	"github.com/setflow/setflow/policy"
	"github.com/setflow/setflow/simulator"
	"github.com/setflow/setflow/userstate"
	"github.com/setflow/setflow/userstate/statedb"
	"github.com/setflow/setflow/workflows"
)

// TestOutagesUnderLoad runs a steady load of distinct events through the
// ingress — account-disabled (hijacking) and credential-change SETs, which
// send a security notice, and unlink webhooks; account-disabled and unlink
// change the user's CRM contact — against a stack whose worker is a real
// `setflow worker` process, and meanwhile, each at its worst moment:
//
//   - PostgreSQL (a private cluster this test starts on its own port, never
//     the machine's shared server) is stopped in immediate mode while the
//     worker holds a CRM write and an email that have happened but whose
//     answers have not arrived; the answers arrive while it is down, so
//     neither can be recorded; it starts again after SETFLOW_OUTAGE_PG_DOWN.
//     The ingress answers 503 meanwhile and the senders retry;
//   - the SMTP server stalls (a proxy in front of Mailpit stops forwarding in
//     both directions) for longer than the activity timeout, starting right
//     after Mailpit took a message and before its answer reaches the worker;
//     then it forwards again;
//   - at the same time the CRM answers 503 for SETFLOW_OUTAGE_CRM_DOWN,
//     starting with a write it applied anyway (a gateway timing out a write
//     that landed); retries are bounded by the worker's configured
//     SETFLOW_STEP_RETRY_FOR, not by code;
//   - the worker process is SIGKILLed while it holds a done but unanswered
//     CRM write and email, and a new process starts;
//   - the new worker is sent SIGTERM while it holds a CRM call and an SMTP
//     send, and another starts once it has exited. (The test asserts the
//     outcome only, not how fast the stop is.)
//
// The senders retry like Kakao (connection errors and 5xx) and count only a
// 2xx as accepted. Afterwards, for every accepted delivery: one inbox row,
// dispatched; its user's stream ran once; its audit trail holds each expected
// step once and "<name>/completed"; no step parked; its earlier session was
// revoked exactly once and the later one kept. The CRM stand-in applies each
// idempotency key once and counts every request: each changed user has
// exactly one applied write, under the key of its state version, and holds
// what the user's state asks for (userstate's State.Contact). Every
// notice-bearing event has at least one message in Mailpit with the Message-ID
// of its event and step, every copy carries it, and a second copy is audited
// as a repeat. The audit chain verifies.
func TestOutagesUnderLoad(t *testing.T) {
	cfg := outageConfigFromEnv(t)
	start := time.Now()
	logf := func(format string, args ...any) {
		t.Helper()
		t.Logf("%6.1fs  %s", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}
	logf("config: %+v", cfg)

	pg := startPrivatePostgres(t)
	db, dbURL := pg.database(t, "setflow")
	logf("private PostgreSQL cluster on port %d (%s)", pg.port, pg.dir)
	installRevocationLog(t, db)
	key, err := simulator.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	s := &stack{t: t, DB: db, DBURL: dbURL, Key: key, Inbox: inbox.NewPostgres(db), Audit: auditdb.NewStore(db), log: testLogger()}

	bin := buildSetflow(t)
	logf("setflow built (%s)", bin)
	mail := testenv.Mailpit(t, "--max", "0") // keep every message
	smtp := newStallingProxy(t, mail.SMTPAddr())
	crmSrv := newOutageCRM(t)
	tempo := testenv.Temporal(t, "")
	hostPort := tempo.FrontendHostPort()

	events := outageEvents(t, s, cfg.poolSize())
	logf("%d events prepared", len(events))

	in := startChaosIngress(t, s)
	startChaosRelay(t, s, hostPort, nil)
	workers := &workerProcs{bin: bin, dir: t.TempDir(), env: outageWorkerEnv(dbURL, hostPort, crmSrv, smtp, cfg.retryFor)}
	t.Cleanup(func() { workers.cleanup(t) })
	w := workers.start(t)
	logf("worker process %d running", w.pid())
	load := startKakaoSenders(in.url, events, cfg.rate, 48)
	t.Cleanup(load.stop)
	gap := func() { load.waitMore(t, int64(cfg.rate*3)) }

	for round := 1; round <= cfg.rounds; round++ {
		logf("round %d of %d", round, cfg.rounds)

		// (a) PostgreSQL, stopped (immediate) while a CRM write and an
		// email have happened and their answers are held.
		gap()
		crmSrv.hold(1)
		smtp.hold(1)
		crmSrv.waitHeld(t, "a CRM write held before PostgreSQL stops")
		smtp.waitHeld(t, "an email held before PostgreSQL stops")
		pg.stop(t)
		logf("PostgreSQL stopped (immediate) holding an applied CRM write and an accepted email (accepted %d)", load.accepted.Load())
		time.Sleep(cfg.pgDown / 3)
		crmSrv.release()
		smtp.release()
		time.Sleep(cfg.pgDown - cfg.pgDown/3)
		pg.start(t)
		logf("PostgreSQL started again after %s (accepted %d, %d sends retried)", cfg.pgDown, load.accepted.Load(), load.retries.Load())

		// (b) SMTP stall and (c) CRM outage, together.
		gap()
		smtp.stallNext(cfg.smtpStall)
		crmSrv.outageNext(cfg.crmDown)
		stalled := smtp.waitStall(t)
		logf("SMTP stalled for %s, right after Mailpit took a message (accepted %d)", cfg.smtpStall, load.accepted.Load())
		down := crmSrv.waitOutage(t)
		logf("CRM answering 503 for %s, starting with a write it applied (accepted %d)", cfg.crmDown, load.accepted.Load())
		time.Sleep(time.Until(later(stalled.Add(cfg.smtpStall), down.Add(cfg.crmDown))))
		logf("SMTP and CRM back (accepted %d, %d 503s from the CRM, %d SMTP connections held by the stall)",
			load.accepted.Load(), crmSrv.unavailable.Load(), smtp.stalledConns.Load())

		// (d) SIGKILL of the worker holding a done, unanswered CRM write
		// and email.
		gap()
		crmSrv.hold(1)
		smtp.hold(1)
		crmSrv.waitHeld(t, "a CRM write held before the SIGKILL")
		smtp.waitHeld(t, "an email held before the SIGKILL")
		w.kill(t)
		crmSrv.release()
		smtp.release()
		logf("worker process %d SIGKILLed holding an applied CRM write and an accepted email (accepted %d)", w.pid(), load.accepted.Load())
		w = workers.start(t)
		logf("worker process %d started", w.pid())

		// (e) SIGTERM of the worker during a CRM call and an SMTP send.
		gap()
		crmSrv.hold(1)
		smtp.hold(1)
		crmSrv.waitHeld(t, "a CRM call held before the SIGTERM")
		smtp.waitHeld(t, "an SMTP send held before the SIGTERM")
		w.signal(t, syscall.SIGTERM)
		time.Sleep(time.Second)
		crmSrv.release()
		smtp.release()
		took := w.waitExit(t, 90*time.Second)
		logf("worker process %d sent SIGTERM during a CRM call and an SMTP send: exited after %s (%s)", w.pid(), took.Round(100*time.Millisecond), w.exitState())
		w = workers.start(t)
		logf("worker process %d started", w.pid())
	}
	gap()
	load.stop()
	load.wait(t)
	accepted, rejected := load.result()
	logf("load done: %d accepted, %d rejected, %d retried sends (connection errors or 5xx), %d events left unsent",
		len(accepted), len(rejected), load.retries.Load(), len(events)-load.offered())
	if len(rejected) > 0 {
		t.Errorf("deliveries refused or given up: %v", rejected)
	}
	if load.exhausted.Load() {
		t.Errorf("the load ran out of prepared events before the outages ended: raise poolSize")
	}

	drainOutages(t, s, accepted, cfg.drain, logf)
	checkOutageOutcome(t, s, tempo.Client(), accepted, events, crmSrv, smtp, mail, load, workers)
	workers.checkLogs(t)
	logf("checked: no accepted event lost, no CRM write twice, every notice delivered")
}

// outageConfig is the test's sizes; see the top of the file.
type outageConfig struct {
	rate      float64       // events per second
	rounds    int           // repetitions of the outage sequence
	pgDown    time.Duration // PostgreSQL down
	smtpStall time.Duration // SMTP stalled
	crmDown   time.Duration // CRM answering 503
	retryFor  time.Duration // the worker's SETFLOW_STEP_RETRY_FOR
	drain     time.Duration // time for everything to finish after the load
}

func (c outageConfig) String() string {
	return fmt.Sprintf("rate=%g/s rounds=%d pg_down=%s smtp_stall=%s crm_down=%s step_retry_for=%s drain=%s",
		c.rate, c.rounds, c.pgDown, c.smtpStall, c.crmDown, c.retryFor, c.drain)
}

func outageConfigFromEnv(t *testing.T) outageConfig {
	t.Helper()
	dur := func(name string, def time.Duration) time.Duration {
		v := os.Getenv(name)
		if v == "" {
			return def
		}
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("%s=%q: want a positive duration", name, v)
		}
		return d
	}
	c := outageConfig{rate: 4, rounds: 1}
	if v := os.Getenv("SETFLOW_OUTAGE_RATE"); v != "" {
		r, err := strconv.ParseFloat(v, 64)
		if err != nil || r < 1 || r > 200 {
			t.Fatalf("SETFLOW_OUTAGE_RATE=%q: want 1 to 200 events per second", v)
		}
		c.rate = r
	}
	if v := os.Getenv("SETFLOW_OUTAGE_ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("SETFLOW_OUTAGE_ROUNDS=%q: want a positive number", v)
		}
		c.rounds = n
	}
	c.pgDown = dur("SETFLOW_OUTAGE_PG_DOWN", 3*time.Second)
	c.smtpStall = dur("SETFLOW_OUTAGE_SMTP_STALL", 40*time.Second)
	c.crmDown = dur("SETFLOW_OUTAGE_CRM_DOWN", 40*time.Second)
	longest := max(c.pgDown, c.smtpStall, c.crmDown)
	c.retryFor = dur("SETFLOW_OUTAGE_STEP_RETRY_FOR", 3*longest+2*time.Minute)
	c.drain = dur("SETFLOW_OUTAGE_DRAIN", max(3*time.Minute, 2*longest+2*time.Minute))
	if c.smtpStall <= 30*time.Second {
		t.Logf("note: SETFLOW_OUTAGE_SMTP_STALL=%s does not outlast the activity's 30 s timeout", c.smtpStall)
	}
	if c.retryFor < 2*max(c.smtpStall, c.crmDown)+time.Minute {
		t.Logf("note: SETFLOW_OUTAGE_STEP_RETRY_FOR=%s may be too short for the outages: steps would park", c.retryFor)
	}
	return c
}

// poolSize is how many distinct events to prepare: the load offers them at
// rate for as long as the rounds take, with a wide margin.
func (c outageConfig) poolSize() int {
	perRound := c.pgDown + max(c.smtpStall, c.crmDown) + 90*time.Second
	secs := (time.Duration(c.rounds)*perRound + time.Minute).Seconds()
	n := int(c.rate*secs) + 30
	return n - n%3 + 3
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// privatePostgres is a PostgreSQL cluster of this test's own, on a free
// port, so that it can be stopped in immediate mode without touching the
// machine's shared server. It runs as the postgres OS user when the test
// runs as root (PostgreSQL refuses root).
type privatePostgres struct {
	bin  string // directory of initdb and pg_ctl
	dir  string // owned by the cluster's user: data/, the socket, logs
	port int
	cred *syscall.Credential // nil: run as the test's user
}

func postgresBinDir(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("SETFLOW_PG_BIN"); d != "" {
		return d
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	sort.Slice(matches, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(matches[i]))))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(matches[j]))))
		return vi > vj
	})
	if len(matches) > 0 {
		return filepath.Dir(matches[0])
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p)
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		return strings.TrimSpace(string(out))
	}
	testenv.Unavailable(t, "PostgreSQL server binaries (initdb, pg_ctl): none under /usr/lib/postgresql or on PATH; set SETFLOW_PG_BIN")
	return ""
}

func startPrivatePostgres(t *testing.T) *privatePostgres {
	t.Helper()
	p := &privatePostgres{bin: postgresBinDir(t)}
	for _, tool := range []string{"initdb", "pg_ctl"} {
		if _, err := os.Stat(filepath.Join(p.bin, tool)); err != nil {
			testenv.Unavailable(t, "%s: %v", tool, err)
		}
	}
	// A short path outside t.TempDir (whose parents only root may enter):
	// the Unix socket lives here too.
	dir, err := os.MkdirTemp("", "setflow-pg-")
	if err != nil {
		t.Fatal(err)
	}
	p.dir = dir
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			testenv.Unavailable(t, "running as root, and no postgres OS user to run a private cluster as: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		p.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := p.run("initdb", "-D", p.data(), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	// The first start may lose the race for its free port: try another.
	for attempt := 0; ; attempt++ {
		p.port = testenv.FreePort(t)
		conf := fmt.Sprintf("\n# setflow TestOutagesUnderLoad\nport = %d\nlisten_addresses = '127.0.0.1'\n"+
			"unix_socket_directories = '%s'\nmax_connections = 300\n"+
			// Only the server process is killed here, never the machine:
			// what a commit wrote reaches the kernel either way.
			"fsync = off\n", p.port, p.dir)
		if err := appendFile(filepath.Join(p.data(), "postgresql.conf"), conf); err != nil {
			t.Fatal(err)
		}
		out, err := p.run("pg_ctl", "-D", p.data(), "-l", p.logFile(), "-w", "-t", "60", "start")
		if err == nil {
			break
		}
		if attempt == 2 {
			t.Fatalf("pg_ctl start: %v\n%s\n%s", err, out, p.serverLog())
		}
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("private PostgreSQL log (tail):\n%s", tail(p.serverLog(), 40))
		}
		_, _ = p.run("pg_ctl", "-D", p.data(), "-m", "immediate", "-w", "stop")
	})
	return p
}

func (p *privatePostgres) data() string    { return filepath.Join(p.dir, "data") }
func (p *privatePostgres) logFile() string { return filepath.Join(p.dir, "server.log") }

func (p *privatePostgres) serverLog() string {
	b, _ := os.ReadFile(p.logFile())
	return string(b)
}

// run runs one of the cluster's tools as the cluster's user.
func (p *privatePostgres) run(tool string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(p.bin, tool), args...)
	cmd.Dir = p.dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "LANG=C", "LC_ALL=C"}
	if p.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
	}
	// pg_ctl start leaves the server running with its output in the log
	// file; never wait for it to close our pipes.
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// stop stops the server in immediate mode: no shutdown checkpoint, clients
// cut off; the next start recovers from the WAL, as after a crash.
func (p *privatePostgres) stop(t *testing.T) {
	t.Helper()
	if out, err := p.run("pg_ctl", "-D", p.data(), "-m", "immediate", "-w", "stop"); err != nil {
		t.Fatalf("pg_ctl stop -m immediate: %v\n%s", err, out)
	}
}

func (p *privatePostgres) start(t *testing.T) {
	t.Helper()
	if out, err := p.run("pg_ctl", "-D", p.data(), "-l", p.logFile(), "-w", "-t", "120", "start"); err != nil {
		t.Fatalf("pg_ctl start: %v\n%s\n%s", err, out, tail(p.serverLog(), 40))
	}
}

// database creates a migrated database on the cluster and returns its
// handle and URL.
func (p *privatePostgres) database(t *testing.T, name string) (*sqlx.DB, string) {
	t.Helper()
	admin := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", p.port)
	adb, err := sqlx.Open("postgres", admin)
	if err != nil {
		t.Fatal(err)
	}
	defer adb.Close()
	if _, err := adb.Exec("CREATE DATABASE " + name); err != nil {
		t.Fatalf("create database: %v", err)
	}
	url := pgurl.WithDatabase(admin, name)
	db, err := sqlx.Open("postgres", url)
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(32)
	db.SetMaxIdleConns(32)
	t.Cleanup(func() { db.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := migrations.Up(ctx, db.DB); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return db, url
}

func appendFile(path, text string) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func tail(s string, lines int) string {
	parts := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return strings.Join(parts, "\n")
}

// raceEnabled reports whether this test binary was built with -race.
func raceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// buildSetflow builds the setflow binary once into a temporary directory,
// with the race detector when the test has it (so that the build shares the
// test's build cache, and the worker is checked for races too).
func buildSetflow(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "setflow")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := goBuildSetflow(ctx, testenv.RepoRoot(t), out, raceEnabled()); err != nil {
		t.Fatal(err)
	}
	return out
}

// goBuildSetflow builds cmd/setflow of the checkout at root into out.
func goBuildSetflow(ctx context.Context, root, out string, race bool) error {
	goBin, err := exec.LookPath("go")
	if err != nil {
		// The toolchain running this test, when go is not on PATH.
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go") //nolint:staticcheck // SA1019: the test runs where it was built
	}
	args := []string{"build", "-o", out}
	if race {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/setflow")
	cmd := exec.CommandContext(ctx, goBin, args...)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	return nil
}

// outageWorkerEnv is the worker process's configuration: the private
// cluster, the test's Temporal server, the CRM stand-in and the SMTP proxy.
// Payloads are not encrypted (no SETFLOW_CODEC_KEYS, hence
// -insecure-dev-keys): the in-process relay sends them in clear.
func outageWorkerEnv(dbURL, hostPort string, c *outageCRM, smtp *stallingProxy, retryFor time.Duration) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "SETFLOW_") || strings.HasPrefix(k, "TEMPORAL_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env,
		"SETFLOW_DATABASE_URL="+dbURL,
		"TEMPORAL_ADDRESS="+hostPort,
		"TEMPORAL_NAMESPACE=default",
		"SETFLOW_AUDIT_KEY="+string(subjects.Key), // the relay's subject hashes
		"SETFLOW_INSECURE_DEV_KEYS=1",
		"SETFLOW_CRM=webhook",
		"SETFLOW_CRM_WEBHOOK_URL="+c.URL(),
		"SETFLOW_CRM_WEBHOOK_SECRET="+string(c.secret),
		"SETFLOW_SMTP_HOST="+smtp.Host,
		"SETFLOW_SMTP_PORT="+strconv.Itoa(smtp.Port),
		"SETFLOW_SMTP_TLS=none",
		"SETFLOW_MAIL_FROM=setflow <security@example.test>",
		"SETFLOW_SERVICE_NAME=outage",
		"SETFLOW_STEP_RETRY_FOR="+retryFor.String(),
		// The load offers up to 480 destructive steps a minute, past the
		// blast-radius guard's default: this test is about outages, and
		// TestBlastRadiusGuardStorm about the guard.
		"SETFLOW_GUARD_LIMIT=0",
		// Unlinked users' data waits a month: no purge runs during the test.
		"SETFLOW_PURGE_AFTER=720h",
		"SETFLOW_LOG_LEVEL=info",
	)
}

// workerProcs starts `setflow worker` processes, each logging to its own file.
type workerProcs struct {
	bin, dir string
	env      []string
	mu       sync.Mutex
	all      []*workerProc
}

type workerProc struct {
	cmd    *exec.Cmd
	log    string
	exited chan struct{}
	err    error
}

func (ws *workerProcs) start(t *testing.T) *workerProc {
	t.Helper()
	ws.mu.Lock()
	n := len(ws.all) + 1
	ws.mu.Unlock()
	logPath := filepath.Join(ws.dir, fmt.Sprintf("worker-%d.log", n))
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(ws.bin, "worker", "-crm-rate", "500")
	cmd.Env = ws.env
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start worker: %v", err)
	}
	w := &workerProc{cmd: cmd, log: logPath, exited: make(chan struct{})}
	go func() { w.err = cmd.Wait(); f.Close(); close(w.exited) }()
	ws.mu.Lock()
	ws.all = append(ws.all, w)
	ws.mu.Unlock()
	eventually(t, 60*time.Second, "the worker process to run", func() bool {
		select {
		case <-w.exited:
			t.Fatalf("worker process exited at start (%v):\n%s", w.err, tail(w.output(), 40))
		default:
		}
		return strings.Contains(w.output(), "worker running")
	})
	return w
}

func (w *workerProc) pid() int { return w.cmd.Process.Pid }

func (w *workerProc) output() string {
	b, _ := os.ReadFile(w.log)
	return string(b)
}

func (w *workerProc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := w.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v to worker %d: %v", sig, w.pid(), err)
	}
}

func (w *workerProc) kill(t *testing.T) {
	t.Helper()
	w.signal(t, syscall.SIGKILL)
	w.waitExit(t, 30*time.Second)
}

// waitExit waits for the process to exit and returns how long that took.
func (w *workerProc) waitExit(t *testing.T, timeout time.Duration) time.Duration {
	t.Helper()
	begin := time.Now()
	select {
	case <-w.exited:
	case <-time.After(timeout):
		_ = w.cmd.Process.Kill()
		<-w.exited
		t.Fatalf("worker process %d did not exit within %s:\n%s", w.pid(), timeout, tail(w.output(), 40))
	}
	return time.Since(begin)
}

func (w *workerProc) exitState() string {
	if w.cmd.ProcessState == nil {
		return "running"
	}
	return w.cmd.ProcessState.String()
}

func (ws *workerProcs) cleanup(t *testing.T) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	for _, w := range ws.all {
		select {
		case <-w.exited:
		default:
			_ = w.cmd.Process.Kill()
			<-w.exited
		}
		if t.Failed() {
			t.Logf("worker process %d (%s) output (tail):\n%s", w.pid(), w.exitState(), tail(w.output(), 60))
		}
	}
}

// checkLogs fails on a data race or panic reported by any worker process.
func (ws *workerProcs) checkLogs(t *testing.T) {
	t.Helper()
	ws.mu.Lock()
	defer ws.mu.Unlock()
	for _, w := range ws.all {
		out := w.output()
		for _, bad := range []string{"WARNING: DATA RACE", "panic:"} {
			if i := strings.Index(out, bad); i >= 0 {
				t.Errorf("worker process %d: %q in its output:\n%s", w.pid(), bad, out[i:min(len(out), i+4000)])
			}
		}
	}
}

// stallingProxy forwards SMTP to Mailpit. It can hold the answer to the end
// of a message's DATA (Mailpit has the message, the sender does not know
// yet) until released, and it can stall: stop forwarding anything, in both
// directions and on new connections too, for a while, starting at such an
// answer. Bytes a stalled connection received are forwarded afterwards, as a
// server that stopped reading would read them from its socket.
type stallingProxy struct {
	Host   string
	Port   int
	target string

	mu      sync.Mutex
	open    chan struct{} // closed while forwarding
	holds   int           // answers still to hold
	rel     chan struct{} // closed by release
	stallD  time.Duration // armed stall
	stalled chan time.Time

	held         atomic.Int64
	stalledConns atomic.Int64 // connections that had traffic held by a stall
	closed       chan struct{}
}

func newStallingProxy(t *testing.T, target string) *stallingProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallingProxy{Host: "127.0.0.1", Port: ln.Addr().(*net.TCPAddr).Port, target: target,
		open: make(chan struct{}), rel: make(chan struct{}), stalled: make(chan time.Time, 1), closed: make(chan struct{})}
	close(p.open)
	var wg sync.WaitGroup
	var conns sync.Map
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Store(c, true)
			wg.Go(func() { defer conns.Delete(c); p.serve(c) })
		}
	}()
	t.Cleanup(func() {
		close(p.closed)
		ln.Close()
		conns.Range(func(k, _ any) bool { k.(net.Conn).Close(); return true })
		wg.Wait()
	})
	return p
}

// hold arms the proxy to hold the next n answers to the end of DATA.
func (p *stallingProxy) hold(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.holds += n
}

func (p *stallingProxy) waitHeld(t *testing.T, what string) {
	t.Helper()
	p.mu.Lock()
	want := p.held.Load() + int64(p.holds)
	p.mu.Unlock()
	eventually(t, 60*time.Second, what, func() bool { return p.held.Load() >= want })
}

// release lets the held answers through.
func (p *stallingProxy) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	close(p.rel)
	p.rel = make(chan struct{})
}

// stallNext arms a stall of d that starts at the next answer to the end of
// DATA, which it withholds with everything else.
func (p *stallingProxy) stallNext(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stallD = d
}

// waitStall waits for the armed stall to start and returns when it did.
func (p *stallingProxy) waitStall(t *testing.T) time.Time {
	t.Helper()
	select {
	case at := <-p.stalled:
		return at
	case <-time.After(60 * time.Second):
		t.Fatal("timed out waiting for an email to start the SMTP stall")
		return time.Time{}
	}
}

// dataAnswer decides what happens to an answer to the end of DATA: held
// (wait for release), or the start of a stall.
func (p *stallingProxy) dataAnswer() (release <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stallD > 0 {
		gate := make(chan struct{})
		p.open = gate
		d := p.stallD
		p.stallD = 0
		p.stalled <- time.Now()
		time.AfterFunc(d, func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			close(gate)
		})
		return nil
	}
	if p.holds > 0 {
		p.holds--
		p.held.Add(1)
		return p.rel
	}
	return nil
}

// wait blocks while the proxy is stalled, calling blocked first if it has to.
func (p *stallingProxy) wait(blocked func()) {
	p.mu.Lock()
	gate := p.open
	p.mu.Unlock()
	select {
	case <-gate:
		return
	default:
	}
	blocked()
	select {
	case <-gate:
	case <-p.closed:
	}
}

func (p *stallingProxy) serve(c net.Conn) {
	defer c.Close()
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer up.Close()
	var counted atomic.Bool
	stalled := func() {
		if counted.CompareAndSwap(false, true) {
			p.stalledConns.Add(1)
		}
	}
	fromClient := make(chan struct{})
	go func() {
		defer close(fromClient)
		buf := make([]byte, 32<<10)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				p.wait(stalled)
				if _, werr := up.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				p.wait(stalled)
				if tc, ok := up.(*net.TCPConn); ok {
					_ = tc.CloseWrite()
				}
				return
			}
		}
	}()
	br := bufio.NewReader(up)
	afterData := false
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			break
		}
		if afterData && len(line) >= 4 && line[3] == ' ' {
			// The answer to the end of the message: Mailpit has it.
			afterData = false
			if rel := p.dataAnswer(); rel != nil {
				select {
				case <-rel:
				case <-p.closed:
				}
			}
		}
		if strings.HasPrefix(line, "354") {
			afterData = true
		}
		p.wait(stalled)
		if _, err := io.WriteString(c, line); err != nil {
			break
		}
	}
	c.Close()
	<-fromClient
}

// outageCRM is the receiving side of crm.Webhook: it verifies the
// signature, applies each idempotency key once (a repeat is answered 200 and
// changes nothing) and counts every request per key. It can hold the answers
// to the next writes after applying them, until released, and it can go
// down: the next write is applied but answered 503, and every request for a
// while after that is answered 503 without being applied.
type outageCRM struct {
	ts     *httptest.Server
	secret []byte

	crmLedger // its mu also guards the fields below
	holds     int
	rel       chan struct{}
	downFor   time.Duration // armed outage
	downUntil time.Time
	wentDown  chan time.Time

	held        atomic.Int64
	unavailable atomic.Int64 // 503s answered
}

func newOutageCRM(t *testing.T) *outageCRM {
	t.Helper()
	c := &outageCRM{secret: []byte("outage-crm-secret"), rel: make(chan struct{}), wentDown: make(chan time.Time, 1)}
	c.init()
	c.ts = httptest.NewServer(http.HandlerFunc(c.serve))
	t.Cleanup(c.ts.Close)
	t.Cleanup(c.release) // runs first: no handler stays held
	return c
}

func (c *outageCRM) URL() string { return c.ts.URL }

func (c *outageCRM) hold(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.holds += n
}

func (c *outageCRM) waitHeld(t *testing.T, what string) {
	t.Helper()
	c.mu.Lock()
	want := c.held.Load() + int64(c.holds)
	c.mu.Unlock()
	eventually(t, 60*time.Second, what, func() bool { return c.held.Load() >= want })
}

func (c *outageCRM) release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	close(c.rel)
	c.rel = make(chan struct{})
}

// outageNext arms an outage of d that starts at the next request.
func (c *outageCRM) outageNext(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.downFor = d
}

func (c *outageCRM) waitOutage(t *testing.T) time.Time {
	t.Helper()
	select {
	case at := <-c.wentDown:
		return at
	case <-time.After(60 * time.Second):
		t.Fatal("timed out waiting for a CRM request to start the outage")
		return time.Time{}
	}
}

func (c *outageCRM) serve(w http.ResponseWriter, r *http.Request) {
	doc, ok := readCRMDocument(w, r, c.secret)
	if !ok {
		return
	}
	key := doc.IdempotencyKey
	c.mu.Lock()
	c.requests[key]++
	now := time.Now()
	switch {
	case c.downFor > 0:
		// The outage starts with a write that landed anyway.
		c.applyOnce(doc)
		c.downUntil = now.Add(c.downFor)
		c.downFor = 0
		c.wentDown <- now
		c.mu.Unlock()
		c.unavailable.Add(1)
		http.Error(w, "service unavailable", http.StatusServiceUnavailable)
		return
	case now.Before(c.downUntil):
		c.mu.Unlock()
		c.unavailable.Add(1)
		http.Error(w, "service unavailable", http.StatusServiceUnavailable)
		return
	case c.holds > 0:
		c.holds--
		c.applyOnce(doc)
		rel := c.rel
		c.mu.Unlock()
		c.held.Add(1)
		select {
		case <-rel:
		case <-r.Context().Done():
		}
		w.WriteHeader(http.StatusOK)
		return
	}
	c.applyOnce(doc)
	c.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

// outageEvents prepares n distinct events as chaosEvents does (one user
// each: SET users with an email address in their state, every user with a
// session from before the event and one from after it), seeded in parallel.
func outageEvents(t *testing.T, s *stack, n int) []chaosEvent {
	t.Helper()
	now := time.Now()
	events := make([]chaosEvent, n)
	for i := range events {
		events[i] = newChaosEvent(t, s, fmt.Sprintf("88%05d", i), i, now)
	}
	states := statedb.NewStore(s.DB)
	seedTime := now.Add(-24 * time.Hour).UTC().Truncate(time.Microsecond)
	g, ctx := errgroup.WithContext(context.Background())
	g.SetLimit(16)
	for _, e := range events {
		g.Go(func() error {
			if e.token != "" {
				// A day-old profile change, applied as the stream would
				// (seedProfile's, without its t.Fatal).
				c := userstate.Change{Time: seedTime, Now: now,
					Fields: map[userstate.Field]string{userstate.Email: chaosEmail(e.user), userstate.Nickname: "user " + e.user}}
				if _, err := states.Apply(ctx, subjectOf(e.user), "seed:"+e.user, func(st userstate.State) (userstate.State, userstate.Decision) {
					return userstate.Apply(st, c)
				}); err != nil {
					return fmt.Errorf("seed %s: %w", e.user, err)
				}
			}
			_, err := s.DB.ExecContext(ctx, `INSERT INTO sessions (id, user_id, created_at) VALUES ($1, $2, $3), ($4, $2, $5)`,
				e.user+"-old", e.user, now.Add(-time.Hour), e.user+"-later", now.Add(time.Hour))
			return err
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	return events
}

// drainOutages waits for every accepted event to be dispatched and
// completed and every changed contact to be synced, logging progress; on a
// timeout it shows where the stragglers are.
func drainOutages(t *testing.T, s *stack, accepted []chaosEvent, timeout time.Duration, logf func(string, ...any)) {
	t.Helper()
	var keys, synced []string
	for _, e := range accepted {
		keys = append(keys, e.key)
		if chaosSyncs[e.kind] {
			synced = append(synced, subjects.Hash(testIssuer, e.user))
		}
	}
	count := func(q string, arg []string, more ...any) int {
		var n int
		if err := s.DB.Get(&n, q, append([]any{pq.Array(arg)}, more...)...); err != nil {
			return -1
		}
		return n
	}
	var dispatched, completed, syncs int
	progress := func() bool {
		dispatched = count(`SELECT count(*) FROM setflow_inbox WHERE status = 'dispatched' AND dedupe_key = ANY($1)`, keys)
		completed = count(`SELECT count(DISTINCT event_key) FROM setflow_audit WHERE step LIKE '%/completed' AND event_key = ANY($1)`, keys)
		// Through means synced and audited: the stream writes the sync's
		// audit row after the activity recorded the version (a worker
		// killed in between leaves the row to the sync's retry).
		syncs = count(`SELECT count(*) FROM setflow_user_state u
			WHERE subject_hash = ANY($1) AND version > 0 AND crm_version >= version
			  AND EXISTS (SELECT 1 FROM setflow_audit a WHERE a.event_key = $2 || u.subject_hash AND a.step = 'crm-sync/v' || u.crm_version)`,
			synced, workflows.CRMSyncKeyPrefix)
		return dispatched == len(keys) && completed == len(keys) && syncs == len(synced)
	}
	deadline := time.Now().Add(timeout)
	lastLog := time.Now()
	for !progress() {
		if time.Now().After(deadline) {
			var stuck []string
			_ = s.DB.Select(&stuck, `SELECT k FROM unnest($1::text[]) AS k WHERE NOT EXISTS (
				SELECT 1 FROM setflow_audit WHERE event_key = k AND step LIKE '%/completed') ORDER BY k LIMIT 10`, pq.Array(keys))
			var b strings.Builder
			for _, k := range stuck {
				var status string
				_ = s.DB.Get(&status, `SELECT status FROM setflow_inbox WHERE dedupe_key = $1`, k)
				fmt.Fprintf(&b, "\n  %s (inbox %q): %s", k, status, s.auditSteps(k))
			}
			t.Fatalf("timed out after %s draining: %d/%d dispatched, %d/%d completed, %d/%d CRM syncs through; first stuck events:%s",
				timeout, dispatched, len(keys), completed, len(keys), syncs, len(synced), b.String())
		}
		if time.Since(lastLog) > 15*time.Second {
			logf("draining: %d/%d dispatched, %d/%d completed, %d/%d CRM syncs through",
				dispatched, len(keys), completed, len(keys), syncs, len(synced))
			lastLog = time.Now()
		}
		time.Sleep(250 * time.Millisecond)
	}
	logf("drained: %d events dispatched and completed, %d CRM syncs through", len(keys), len(synced))
}

// checkOutageOutcome asserts that no accepted event was lost, no CRM write
// happened twice and every notice went out at least once
// (checkReactionOutcome), and that the outages were hit.
func checkOutageOutcome(t *testing.T, s *stack, c client.Client, accepted, prepared []chaosEvent, crmSrv *outageCRM,
	smtp *stallingProxy, mail *testenv.MailpitServer, load *kakaoSenders, workers *workerProcs) {
	t.Helper()
	known := map[string]bool{}
	for _, e := range prepared {
		known[e.key] = true
	}
	o := checkReactionOutcome(t, s, c, accepted, &crmSrv.crmLedger, mail, outcomeOptions{prepared: known,
		noticeHistory: func(msgs []testenv.MailpitMessage, e chaosEvent) string { return noticeHistory(s, workers, msgs, e) }})
	// The worst moments happened: senders hit the database outage, the CRM
	// answered 503 and saw writes again (held or refused answers), an email
	// went out again after an attempt whose delivery was unknown, and the
	// stall held SMTP connections.
	if load.retries.Load() == 0 || crmSrv.unavailable.Load() == 0 || o.crmReplays == 0 || o.noticeRepeats == 0 || smtp.stalledConns.Load() == 0 {
		t.Errorf("outages not exercised: %d sends retried, %d CRM 503s, %d CRM requests repeated, %d notices sent again, %d SMTP connections stalled",
			load.retries.Load(), crmSrv.unavailable.Load(), o.crmReplays, o.noticeRepeats, smtp.stalledConns.Load())
	}
	t.Logf("outcome: %d accepted events (%d retried sends), %d inbox rows, %d user streams, %d audit rows (chain intact), "+
		"%d sessions revoked once, %d CRM writes applied for %d changed users (%d repeated requests deduplicated by key, %d 503s), "+
		"%d emails for %d notices (%d sent again with the same Message-ID)",
		o.events, load.retries.Load(), o.inboxRows, o.streams, o.auditRows, o.revocations, o.crmApplied, o.crmSynced, o.crmReplays,
		crmSrv.unavailable.Load(), o.emails, o.notices, o.noticeRepeats)
}

// noticeHistory tells what happened to an event's notice: its audit rows,
// its side-effect row, the copies Mailpit holds and what the workers logged
// about its stream's SendNotice attempts.
func noticeHistory(s *stack, workers *workerProcs, msgs []testenv.MailpitMessage, e chaosEvent) string {
	var b strings.Builder
	var rows []struct {
		Step    string `db:"step"`
		Outcome string `db:"outcome"`
		Detail  string `db:"detail"`
		At      string `db:"at"`
	}
	_ = s.DB.Select(&rows, `SELECT step, outcome, COALESCE(detail::text, '') AS detail, created_at::text AS at
		FROM setflow_audit WHERE event_key = $1 ORDER BY id`, e.key)
	for _, r := range rows {
		fmt.Fprintf(&b, "\n  audit %s %s=%s %s", r.At, r.Step, r.Outcome, r.Detail)
	}
	var se []map[string]any
	if rs, err := s.DB.Queryx(`SELECT * FROM setflow_side_effects WHERE idempotency_key = $1`,
		workflows.StepKey(e.key, e.kind, policy.SendNotice)); err == nil {
		for rs.Next() {
			m := map[string]any{}
			if rs.MapScan(m) == nil {
				se = append(se, m)
			}
		}
		rs.Close()
	}
	fmt.Fprintf(&b, "\n  side effect: %v", se)
	for _, m := range msgs {
		for _, to := range m.To {
			if to.Address == chaosEmail(e.user) {
				fmt.Fprintf(&b, "\n  mailpit: %s %s", m.Created.Format(time.RFC3339Nano), m.MessageID)
			}
		}
	}
	id := workflows.UserStreamID(subjects.Hash(testIssuer, e.user))
	workers.mu.Lock()
	defer workers.mu.Unlock()
	for _, w := range workers.all {
		for _, line := range strings.Split(w.output(), "\n") {
			if strings.Contains(line, id) && strings.Contains(line, "SendNotice") {
				fmt.Fprintf(&b, "\n  worker %d: %s", w.pid(), line)
			}
		}
	}
	return b.String()
}
