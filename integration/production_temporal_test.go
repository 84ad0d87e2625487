package integration

// TestProductionShapedTemporal runs setflow the way a cluster does: against
// a real Temporal server (not the CLI's dev server) at the pinned version,
// with PostgreSQL persistence and SQL visibility that temporal-sql-tool set
// up on private databases of the test Postgres, and with setflow's ingress,
// relay and worker as separate processes (payload encryption on, probes and
// metrics served as in deployments/k8s).
//
// The binaries come from deployments/local/lib.sh (ensure_tools
// --with-temporal-server builds them into .bin, cached):
//   - SETFLOW_TEMPORAL_SERVER_BIN: temporal-server (go.temporal.io/server/cmd/server)
//   - SETFLOW_TEMPORAL_SQL_TOOL_BIN: temporal-sql-tool (…/cmd/tools/sql);
//     default: beside the server.
//
// Missing binaries skip the test, or fail it under SETFLOW_REQUIRE_INTEGRATION=1.

import (
	"context"
	"fmt"
	"io"
	mathrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/setflow/setflow/ingress"
	"github.com/setflow/setflow/internal/testenv"
	"github.com/setflow/setflow/simulator"
)

func TestProductionShapedTemporal(t *testing.T) {
	serverBin, sqlTool := temporalServerBinaries(t)
	start := time.Now()
	logf := func(format string, args ...any) {
		t.Helper()
		t.Logf("%6.1fs  %s", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}

	// Build setflow while Temporal's databases are set up.
	bin := filepath.Join(t.TempDir(), "setflow")
	built := make(chan error, 1)
	go func() { built <- goBuildSetflow(context.Background(), testenv.RepoRoot(t), bin, false) }()

	ts := startSQLTemporal(t, serverBin, sqlTool)
	logf("temporal-server %s up on %s with PostgreSQL persistence", ts.version(t), ts.hostPort)
	// Not registered here: workflows.SearchAttributes has four KeywordList
	// attributes, and SQL visibility's schema has three KeywordList columns
	// (Temporal refuses the fourth). The workflows do not set them yet.

	db, dbURL := testenv.Database(t)
	if err := <-built; err != nil {
		t.Fatal(err)
	}
	logf("setflow built")

	key, err := simulator.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	jwks := &sdJWKS{h: key.JWKSHandler()}
	jwksSrv := newLocalServer(t, jwks)
	jwks.url = jwksSrv
	standIn := newSDCRM(t)
	env := &sdEnv{bin: bin, db: db, dbURL: dbURL, key: key, jwks: jwks, auditKey: sdRandom(t), codec: "k1:" + sdRandom(t)}
	common := map[string]string{
		"TEMPORAL_ADDRESS":           ts.hostPort,
		"TEMPORAL_NAMESPACE":         "default",
		"SETFLOW_CRM":                "webhook",
		"SETFLOW_CRM_WEBHOOK_URL":    standIn.ts.URL,
		"SETFLOW_CRM_WEBHOOK_SECRET": "production-smoke-secret",
		"SETFLOW_LOG_FORMAT":         "json",
	}
	with := func(extra map[string]string) map[string]string {
		m := map[string]string{}
		for k, v := range common {
			m[k] = v
		}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}

	// The rollout order of deployments/k8s: the migrate Job, then each
	// pod's init container `setflow migrate -wait`.
	for _, args := range [][]string{{"migrate"}, {"migrate", "-wait", "-wait-timeout", "30s"}} {
		p := startNoTemporal(t, env, with(nil), args...)
		p.waitExit(t, time.Minute)
	}

	ports := map[string]string{}
	for _, name := range []string{"relay-health", "relay-metrics", "worker-health", "worker-metrics", "ingress-metrics"} {
		ports[name] = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	}
	relay := startNoTemporal(t, env, with(map[string]string{"SETFLOW_HEALTH_LISTEN": ports["relay-health"],
		"SETFLOW_METRICS_LISTEN": ports["relay-metrics"]}), "relay")
	worker := startNoTemporal(t, env, with(map[string]string{"SETFLOW_HEALTH_LISTEN": ports["worker-health"],
		"SETFLOW_METRICS_LISTEN": ports["worker-metrics"]}), "worker")
	ingressAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	// Only the ingress gets the admin keys (to check the unlink webhook's
	// Authorization): a worker with them would call Kakao's user API, which
	// this test cannot reach.
	ing := startNoTemporal(t, env, with(map[string]string{"SETFLOW_LISTEN": ingressAddr,
		"SETFLOW_METRICS_LISTEN": ports["ingress-metrics"], "SETFLOW_KAKAO_ADMIN_KEYS": webhookAdminKey,
		"SETFLOW_KAKAO_APP_ID": webhookAppID}), "ingress")
	base := "http://" + ingressAddr
	for name, u := range map[string]string{"relay": "http://" + ports["relay-health"] + "/readyz",
		"worker": "http://" + ports["worker-health"] + "/readyz", "ingress": base + "/readyz"} {
		procs := map[string]*sdProc{"relay": relay, "worker": worker, "ingress": ing}
		sdEventually(t, 60*time.Second, name+" ready", func() bool {
			if !procs[name].running() {
				t.Fatalf("%s exited: %v", name, procs[name].err)
			}
			st, _ := sdGet(u)
			return st == http.StatusOK
		})
	}
	logf("ingress, relay and worker ready")

	// SETs and webhooks in, each delivered twice (Kakao retries).
	var keys []string
	for i := range 4 {
		user := fmt.Sprintf("prod-user-%d", i)
		set := simulator.SET{Issuer: testIssuer, Audience: testAudience, UserID: user, EventType: "account-disabled",
			JTI: simulator.NewID(), Fields: map[string]any{"reason": "hijacking"}}
		claims, err := set.Claims()
		if err != nil {
			t.Fatal(err)
		}
		token, err := key.Sign(claims)
		if err != nil {
			t.Fatal(err)
		}
		for range 2 {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			st, body, err := simulator.Post(ctx, nil, base+ingress.PathAccountStatus, token)
			cancel()
			if err != nil || st != http.StatusAccepted {
				t.Fatalf("SET for %s: %d %s %v", user, st, body, err)
			}
		}
		keys = append(keys, ingress.SETKey(set.JTI))
	}
	unlinkUser := "prod-user-unlink"
	for range 2 {
		d := simulator.Delivery{Path: ingress.PathUnlink, Encoding: simulator.EncodingForm, AdminKey: webhookAdminKey,
			Fields: map[string]any{"app_id": webhookAppID, "user_id": unlinkUser, "referrer_type": "UNLINK_FROM_APPS"}}
		if st := deliverTo(t, base, d); st != http.StatusOK {
			t.Fatalf("unlink webhook: %d", st)
		}
	}
	var unlinkKeys []string
	if err := db.Select(&unlinkKeys, `SELECT dedupe_key FROM setflow_inbox WHERE source = 'unlink'`); err != nil {
		t.Fatal(err)
	}
	if len(unlinkKeys) != 1 {
		t.Fatalf("unlink delivered twice: %d inbox rows, want 1", len(unlinkKeys))
	}
	keys = append(keys, unlinkKeys[0])
	var rows int
	if err := db.Get(&rows, `SELECT count(*) FROM setflow_inbox`); err != nil || rows != len(keys) {
		t.Fatalf("%d inbox rows (%v), want %d: one per event despite duplicates", rows, err, len(keys))
	}

	// Reactions completed, once.
	for _, k := range keys {
		waitCompleted(t, db, k, 2*time.Minute)
	}
	logf("%d events completed", len(keys))
	for _, k := range keys {
		var completed int
		if err := db.Get(&completed, `SELECT count(*) FROM setflow_audit WHERE event_key = $1 AND step LIKE '%/completed'`, k); err != nil {
			t.Fatal(err)
		}
		if completed != 1 {
			t.Errorf("%s: %d completed rows, want 1", k, completed)
		}
		var status string
		if err := db.Get(&status, `SELECT status FROM setflow_inbox WHERE dedupe_key = $1`, k); err != nil || status != "dispatched" {
			t.Errorf("%s: inbox status %q (%v), want dispatched", k, status, err)
		}
	}
	// The CRM sync runs after an event's steps (the user's sync loop sends
	// the state the event left), so "completed" does not mean "synced yet".
	crmKeys := func(user string) map[string]bool {
		applied := map[string]bool{}
		for _, call := range standIn.calls(user) {
			if call.answered() {
				applied[call.key] = true
			}
		}
		return applied
	}
	for i := range 4 {
		user := fmt.Sprintf("prod-user-%d", i)
		sdEventually(t, time.Minute, user+" synced to the CRM", func() bool { return len(crmKeys(user)) > 0 })
	}

	// Metrics as a platform team scrapes them: setflow's and the SDK's in
	// one registry.
	workerMetrics := scrape(t, "http://"+ports["worker-metrics"]+"/metrics")
	for _, want := range []string{"temporal_request_total", "temporal_workflow_task_schedule_to_start_latency_bucket",
		`setflow_reaction_steps_total{event="account-disabled"`} {
		if !strings.Contains(workerMetrics, want) {
			t.Errorf("worker /metrics lacks %s", want)
		}
	}
	sdEventually(t, 30*time.Second, "relay backlog gauges at zero", func() bool {
		m := scrape(t, "http://"+ports["relay-metrics"]+"/metrics")
		return regexp.MustCompile(`(?m)^setflow_inbox_pending 0$`).MatchString(m) &&
			regexp.MustCompile(`(?m)^setflow_inbox_parked 0$`).MatchString(m) &&
			strings.Contains(m, "temporal_request_total")
	})
	// By now any second sync would have run: the duplicate deliveries and
	// the one state change must have given exactly one CRM write each.
	for i := range 4 {
		user := fmt.Sprintf("prod-user-%d", i)
		if applied := crmKeys(user); len(applied) != 1 {
			t.Errorf("CRM writes for %s under %d idempotency keys, want 1 (one state change)", user, len(applied))
		}
	}
	ingressMetrics := scrape(t, "http://"+ports["ingress-metrics"]+"/metrics")
	for _, want := range []string{`setflow_ingress_seconds_since_last_delivery{route="/webhooks/kakao/account-status"}`,
		`setflow_ingress_seconds_since_last_delivery{route="/webhooks/kakao/unlink"}`, "setflow_jwks_fetches_total 1"} {
		if !strings.Contains(ingressMetrics, want) {
			t.Errorf("ingress /metrics lacks %s", want)
		}
	}

	// Temporal goes down: the relay and the worker stop being ready, the
	// ingress stays ready and keeps accepting; once Temporal is back, the
	// event accepted meanwhile completes.
	ts.stop(t)
	logf("temporal-server stopped")
	for name, u := range map[string]string{"relay": "http://" + ports["relay-health"] + "/readyz",
		"worker": "http://" + ports["worker-health"] + "/readyz"} {
		sdEventually(t, 30*time.Second, name+" not ready while Temporal is down", func() bool {
			st, _ := sdGet(u)
			return st == http.StatusServiceUnavailable
		})
	}
	if st, _ := sdGet(base + "/readyz"); st != http.StatusOK {
		t.Fatalf("ingress /readyz = %d while Temporal is down, want 200 (it needs only Postgres)", st)
	}
	during, err := env.post(base, "prod-user-during-outage")
	if err != nil {
		t.Fatalf("delivery while Temporal is down: %v", err)
	}
	ts.start(t)
	logf("temporal-server restarted")
	waitCompleted(t, db, during, 3*time.Minute)
	for name, u := range map[string]string{"relay": "http://" + ports["relay-health"] + "/readyz",
		"worker": "http://" + ports["worker-health"] + "/readyz"} {
		sdEventually(t, 60*time.Second, name+" ready again", func() bool {
			st, _ := sdGet(u)
			return st == http.StatusOK
		})
	}
	logf("the event accepted during the outage completed")
}

// temporalServerBinaries finds temporal-server and temporal-sql-tool.
func temporalServerBinaries(t *testing.T) (server, sqlTool string) {
	t.Helper()
	server = os.Getenv("SETFLOW_TEMPORAL_SERVER_BIN")
	if server == "" {
		server = filepath.Join(testenv.RepoRoot(t), ".bin", "temporal-server")
	}
	sqlTool = os.Getenv("SETFLOW_TEMPORAL_SQL_TOOL_BIN")
	if sqlTool == "" {
		sqlTool = filepath.Join(filepath.Dir(server), "temporal-sql-tool")
	}
	for _, p := range []string{server, sqlTool} {
		if _, err := os.Stat(p); err != nil {
			testenv.Unavailable(t, "%s (deployments/local/test.sh builds it; set SETFLOW_TEMPORAL_SERVER_BIN): %v", p, err)
		}
	}
	return server, sqlTool
}

// sqlTemporal is a temporal-server process on PostgreSQL.
type sqlTemporal struct {
	bin, root, hostPort string
	proc                *exec.Cmd
	out                 *sdBuffer
	done                chan struct{}
}

// startSQLTemporal creates two private databases on the test Postgres, sets
// up the persistence and visibility schemas with temporal-sql-tool, writes
// a server config on free ports, starts the server and registers the
// "default" namespace (a SQL-backed server has none).
func startSQLTemporal(t *testing.T, bin, sqlTool string) *sqlTemporal {
	t.Helper()
	admin, err := url.Parse(testenv.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	host, port := admin.Hostname(), admin.Port()
	if port == "" {
		port = "5432"
	}
	user := admin.User.Username()
	password, _ := admin.User.Password()
	suffix := fmt.Sprintf("%d_%08x", os.Getpid(), mathrand.Uint32())
	dbs := map[string]string{"temporal": "temporal_t_" + suffix, "visibility": "temporal_v_" + suffix}
	tool := func(db string, args ...string) {
		t.Helper()
		full := []string{"--plugin", "postgres12", "--ep", host, "--port", port, "--user", user, "--db", db}
		if password != "" {
			full = append(full, "--password", password)
		}
		cmd := exec.Command(sqlTool, append(full, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("temporal-sql-tool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	adminDB, err := sqlx.Open("postgres", testenv.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { adminDB.Close() }) // after the drops below (cleanups run last first)
	for schema, db := range dbs {
		tool(db, "create-database")
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			_, _ = adminDB.ExecContext(ctx, "DROP DATABASE IF EXISTS "+db+" WITH (FORCE)")
		})
		tool(db, "setup-schema", "-v", "0.0")
		tool(db, "update-schema", "--schema-name", "postgresql/v12/"+schema)
	}

	p := func() int { return testenv.FreePort(t) }
	frontend, frontendHTTP := p(), p()
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "config"), 0o755); err != nil {
		t.Fatal(err)
	}
	datastore := func(db string) string {
		return fmt.Sprintf(`      sql:
        pluginName: postgres12
        databaseName: %s
        connectAddr: "%s:%s"
        connectProtocol: tcp
        user: %q
        password: %q
        maxConns: 10
        maxIdleConns: 10
        maxConnLifetime: 1h
`, db, host, port, user, password)
	}
	// The server stores membership ports as smallint: below 32768, out of
	// the ephemeral range FreePort draws from.
	service := func(grpc int) string {
		return fmt.Sprintf("    rpc:\n      grpcPort: %d\n      membershipPort: %d\n      bindOnLocalHost: true\n", grpc, membershipPort(t))
	}
	cfg := "log:\n  stdout: true\n  level: warn\n" +
		"persistence:\n  defaultStore: default\n  visibilityStore: visibility\n  numHistoryShards: 4\n  datastores:\n" +
		"    default:\n" + datastore(dbs["temporal"]) + "    visibility:\n" + datastore(dbs["visibility"]) +
		"global:\n  membership:\n    maxJoinDuration: 30s\n    broadcastAddress: \"127.0.0.1\"\n" +
		"services:\n" +
		"  frontend:\n" + strings.TrimSuffix(service(frontend), "\n") + fmt.Sprintf("\n      httpPort: %d\n", frontendHTTP) +
		"  matching:\n" + service(p()) + "  history:\n" + service(p()) + "  worker:\n" + service(p()) +
		"clusterMetadata:\n  enableGlobalNamespace: false\n  failoverVersionIncrement: 10\n  masterClusterName: active\n" +
		"  currentClusterName: active\n  clusterInformation:\n    active:\n      enabled: true\n      initialFailoverVersion: 1\n" +
		fmt.Sprintf("      rpcName: frontend\n      rpcAddress: \"127.0.0.1:%d\"\n      httpAddress: \"127.0.0.1:%d\"\n", frontend, frontendHTTP) +
		"dcRedirectionPolicy:\n  policy: noop\n" +
		"dynamicConfigClient:\n  filepath: " + filepath.Join(root, "config", "dynamic.yaml") + "\n  pollInterval: 10s\n"
	// Search attributes registered by the test are visible at once.
	dyn := "system.forceSearchAttributesCacheRefreshOnRead:\n  - value: true\n"
	for name, body := range map[string]string{"smoke.yaml": cfg, "dynamic.yaml": dyn} {
		if err := os.WriteFile(filepath.Join(root, "config", name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ts := &sqlTemporal{bin: bin, root: root, hostPort: fmt.Sprintf("127.0.0.1:%d", frontend)}
	ts.start(t)
	t.Cleanup(func() { ts.stop(t) })

	c := ts.client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.WorkflowService().RegisterNamespace(ctx, &workflowservice.RegisterNamespaceRequest{
		Namespace: "default", WorkflowExecutionRetentionPeriod: durationpb.New(24 * time.Hour)}); err != nil {
		t.Fatalf("register namespace: %v", err)
	}
	sdEventually(t, 30*time.Second, "namespace default", func() bool {
		_, err := c.WorkflowService().DescribeNamespace(ctx, &workflowservice.DescribeNamespaceRequest{Namespace: "default"})
		return err == nil
	})
	return ts
}

// start runs the server and waits for its frontend to answer.
func (ts *sqlTemporal) start(t *testing.T) {
	t.Helper()
	ts.out = &sdBuffer{}
	ts.done = make(chan struct{})
	ts.proc = exec.Command(ts.bin, "--root", ts.root, "--config", "config", "--env", "smoke", "--allow-no-auth", "start")
	ts.proc.Stdout, ts.proc.Stderr = ts.out, ts.out
	if err := ts.proc.Start(); err != nil {
		t.Fatalf("start temporal-server: %v", err)
	}
	done := ts.done
	proc := ts.proc
	go func() { _ = proc.Wait(); close(done) }()
	sdEventually(t, 90*time.Second, "temporal-server's frontend", func() bool {
		select {
		case <-done:
			t.Fatalf("temporal-server exited:\n%s", tail(ts.out.String(), 40))
		default:
		}
		c, err := client.NewLazyClient(client.Options{HostPort: ts.hostPort, Logger: quietSDKLogger{}})
		if err != nil {
			return false
		}
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err = c.CheckHealth(ctx, &client.CheckHealthRequest{})
		return err == nil
	})
}

// stop ends the server gracefully (idempotent).
func (ts *sqlTemporal) stop(t *testing.T) {
	if ts.proc == nil {
		return
	}
	select {
	case <-ts.done:
		return
	default:
	}
	_ = ts.proc.Process.Signal(os.Interrupt)
	select {
	case <-ts.done:
	case <-time.After(30 * time.Second):
		_ = ts.proc.Process.Kill()
		<-ts.done
	}
	if t.Failed() {
		t.Logf("temporal-server output:\n%s", tail(ts.out.String(), 60))
	}
}

func (ts *sqlTemporal) client(t *testing.T) client.Client {
	t.Helper()
	c, err := client.Dial(client.Options{HostPort: ts.hostPort, Namespace: "default", Logger: quietSDKLogger{}})
	if err != nil {
		t.Fatalf("dial temporal-server: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// version is the server's version as its frontend reports it.
func (ts *sqlTemporal) version(t *testing.T) string {
	t.Helper()
	c := ts.client(t)
	info, err := c.WorkflowService().GetSystemInfo(context.Background(), &workflowservice.GetSystemInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return info.GetServerVersion()
}

type quietSDKLogger struct{}

func (quietSDKLogger) Debug(string, ...any) {}
func (quietSDKLogger) Info(string, ...any)  {}
func (quietSDKLogger) Warn(string, ...any)  {}
func (quietSDKLogger) Error(string, ...any) {}

// startNoTemporal starts a setflow process with env's settings (env has no
// dev server: TEMPORAL_ADDRESS comes from vars).
func startNoTemporal(t *testing.T, env *sdEnv, vars map[string]string, args ...string) *sdProc {
	t.Helper()
	cmd := exec.Command(env.bin, args...)
	cmd.Env = env.environ(vars)
	return startProc(t, strings.Join(args, " "), cmd, 60)
}

// waitCompleted waits for an event's "<name>/completed" audit row.
func waitCompleted(t *testing.T, db *sqlx.DB, key string, timeout time.Duration) {
	t.Helper()
	sdEventually(t, timeout, key+" completed", func() bool {
		var n int
		if err := db.Get(&n, `SELECT count(*) FROM setflow_audit WHERE event_key = $1 AND step LIKE '%/completed'`, key); err != nil {
			t.Fatal(err)
		}
		return n > 0
	})
}

func scrape(t *testing.T, u string) string {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatalf("scrape %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: %d %v", u, resp.StatusCode, err)
	}
	return string(b)
}

// deliverTo sends a webhook delivery to base and returns the status.
func deliverTo(t *testing.T, base string, d simulator.Delivery) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := d.Request(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// membershipPort is a port below 32768 that was free a moment ago.
func membershipPort(t *testing.T) int {
	t.Helper()
	for range 100 {
		port := 20000 + mathrand.IntN(12000)
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			ln.Close()
			return port
		}
	}
	t.Fatal("no free port below 32768")
	return 0
}

// newLocalServer serves h on a local port until the test ends.
func newLocalServer(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}
