package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	neturl "net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/setflow/setflow/codec"
	"github.com/setflow/setflow/config"
	"github.com/setflow/setflow/internal/testenv"
)

// envRunMain makes the test binary run setflow's main with its arguments
// instead of the tests, so that a test can run any sub-command as its own
// process and read everything it prints (usage text, logs, the final error).
const envRunMain = "SETFLOW_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(envRunMain) == "1" {
		os.Args = append([]string{"setflow"}, os.Args[1:]...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// marker is part of every secret value below (except the codec key, checked
// by value), so that any fragment of a secret in the output is found.
const marker = "S3cr3t"

const (
	dbPassword     = "dbpw-S3cr3t-5d1e"
	redisPassword  = "redispw-S3cr3t-a8c4"
	auditKeyValue  = "auditkey-S3cr3t-0f6b2e91"
	codecTokenVal  = "codectoken-S3cr3t-e5f7"
	hubspotToken   = "hubspot-S3cr3t-77e0"
	crmSecret      = "crmsecret-S3cr3t-4b19"
	smtpPassword   = "smtppw-S3cr3t-c3d2"
	kakaoAdminKey  = "kakaoadmin-S3cr3t-91aa"
	callbackSecret = "callback-S3cr3t-2c6d"
	temporalAPIKey = "temporalkey-S3cr3t-8b3f"
	sendAdminKey   = "sendadmin-S3cr3t-0a0b"
)

// codecKey is a valid AES-256 key; its base64 form is the secret.
var codecKey = base64.StdEncoding.EncodeToString([]byte("codec-key-0123456789abcdef-32byt"))

// cleanEnviron is the test's environment without setflow's and Temporal's
// variables, so that only what a test sets reaches the command.
func cleanEnviron() []string {
	var out []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "SETFLOW_") || strings.HasPrefix(kv, "TEMPORAL_") {
			continue
		}
		out = append(out, kv)
	}
	return append(out, envRunMain+"=1")
}

// secretEnv sets every secret setflow reads, plus URLs with credentials.
func secretEnv(dbURL string) map[string]string {
	return map[string]string{
		"SETFLOW_DATABASE_URL":             dbURL,
		"SETFLOW_REDIS_URL":                "redis://:" + redisPassword + "@127.0.0.1:6379/0",
		config.EnvAuditKey:                 auditKeyValue,
		config.EnvCodecKeys:                "k1:" + codecKey,
		config.EnvCodecAuthToken:           codecTokenVal,
		"SETFLOW_HUBSPOT_TOKEN":            hubspotToken,
		"SETFLOW_CRM_WEBHOOK_SECRET":       crmSecret,
		"SETFLOW_CRM_WEBHOOK_URL":          "https://crm:crmurlpw-S3cr3t-1a2b@crm.example/hook?token=crmurltoken-S3cr3t-3c4d",
		"SETFLOW_SMTP_PASSWORD":            smtpPassword,
		config.EnvKakaoAdminKeys:           kakaoAdminKey + ",old-" + kakaoAdminKey,
		"SETFLOW_SESSIONS_CALLBACK_SECRET": callbackSecret,
		"SETFLOW_SESSIONS_CALLBACK_URL":    "https://svc.example/sessions/end?token=cburltoken-S3cr3t-5e6f",
		"TEMPORAL_API_KEY":                 temporalAPIKey,
		"SETFLOW_SEND_ADMIN_KEY":           sendAdminKey,
		"SETFLOW_SEND_URL":                 "http://ingress:sendurlpw-S3cr3t-7a8b@127.0.0.1:1/webhooks",
	}
}

func environ(vars ...map[string]string) []string {
	env := cleanEnviron()
	for _, m := range vars {
		for k, v := range m {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// assertNoSecret fails when text holds any secret or a fragment of one.
func assertNoSecret(t *testing.T, what, text string) {
	t.Helper()
	for _, s := range []string{marker, codecKey, codecKey[:16]} {
		if i := strings.Index(text, s); i >= 0 {
			from, to := max(0, i-120), min(len(text), i+120)
			t.Errorf("%s shows a secret (%q) near: …%s…", what, s, text[from:to])
		}
	}
}

// runSetflow runs `setflow args…` to its end and returns what it printed.
func runSetflow(t *testing.T, env []string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Env = env
	cmd.Dir = t.TempDir()
	out, err := cmd.CombinedOutput()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("setflow %v: %v", args, err)
		}
		code = ee.ExitCode()
	}
	return string(out), code
}

// Every sub-command's -h and a bad flag, with every secret in the
// environment: the usage text shows URLs redacted and no secret at all.
func TestNoSecretInUsageTextOrFlagErrors(t *testing.T) {
	// Port 1: nothing listens, so a command that gets as far as the
	// database fails at once.
	dbURL := "postgres://setflow:" + dbPassword + "@127.0.0.1:1/setflow?sslmode=disable"
	env := environ(secretEnv(dbURL))
	runs := [][]string{{}, {"help"}, {"-h"}, {"no-such-command"}}
	for _, c := range commands {
		runs = append(runs, []string{c.name, "-h"}, []string{c.name, "--help"}, []string{c.name, "-nonexistent-flag"})
	}
	runs = append(runs,
		[]string{"events", "list", "-h"}, []string{"events", "show", "-nonexistent-flag"}, []string{"events", "retry", "-h"},
		[]string{"audit", "verify", "-h"}, []string{"audit", "user", "-nonexistent-flag"},
		[]string{"bench", "reactions", "-h"}, []string{"bench", "reactions", "-nonexistent-flag"},
		[]string{"send", "account-disabled", "-nonexistent-flag"},
		[]string{"worker", "-database-url", "postgres://u:flagpw-S3cr3t-9f9f@127.0.0.1:notaport/x", "-nonexistent-flag"},
	)
	for _, args := range runs {
		out, _ := runSetflow(t, env, args...)
		if strings.TrimSpace(out) == "" {
			t.Errorf("setflow %v printed nothing", args)
		}
		assertNoSecret(t, fmt.Sprintf("setflow %s", strings.Join(args, " ")), out)
		if len(args) == 2 && args[1] == "-h" && args[0] != "events" && args[0] != "audit" {
			if !strings.Contains(strings.ToLower(out), "usage") {
				t.Errorf("setflow %v printed no usage:\n%s", args, out)
			}
		}
		if len(args) == 2 && args[0] == "ingress" {
			// The database URL is still shown, redacted.
			if !strings.Contains(out, "postgres://setflow:xxxxx@127.0.0.1:1/setflow") {
				t.Errorf("setflow %v does not show the redacted database URL:\n%s", args, out)
			}
		}
	}
}

// Errors that quote a URL (a bad port makes url.Parse quote it whole) reach
// the terminal without its password.
func TestNoSecretInStartupErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		env  map[string]string
	}{
		{[]string{"migrate"}, map[string]string{"SETFLOW_DATABASE_URL": "postgres://u:" + dbPassword + "@127.0.0.1:notaport/x"}},
		{[]string{"worker"}, map[string]string{"SETFLOW_DATABASE_URL": "postgres://u:" + dbPassword + "@127.0.0.1:1/x?sslmode=disable"}},
		{[]string{"events", "list", "-database-url", "postgres://u:flagpw-S3cr3t-9f9f@127.0.0.1:notaport/x"}, nil},
	} {
		e := secretEnv("")
		for k, v := range c.env {
			e[k] = v
		}
		out, code := runSetflow(t, environ(e), c.args...)
		if code == 0 {
			t.Errorf("setflow %v succeeded:\n%s", c.args, out)
		}
		assertNoSecret(t, fmt.Sprintf("setflow %s", strings.Join(c.args, " ")), out)
	}
}

// process is a long-running setflow command started by a test.
type process struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func startSetflow(t *testing.T, env []string, args ...string) *process {
	t.Helper()
	p := &process{cmd: exec.Command(os.Args[0], args...), out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd.Env = env
	p.cmd.Dir = t.TempDir()
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.stop() })
	return p
}

// waitFor waits until the output holds every want; it fails the test when the
// process ends first or a minute passes.
func (p *process) waitFor(t *testing.T, wants ...string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		out := p.out.String()
		missing := ""
		for _, w := range wants {
			if !strings.Contains(out, w) {
				missing = w
				break
			}
		}
		if missing == "" {
			return
		}
		select {
		case <-p.done:
			t.Fatalf("setflow %v ended (%v) before logging %q:\n%s", p.cmd.Args[1:], p.err, missing, p.out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("setflow %v did not log %q within a minute:\n%s", p.cmd.Args[1:], missing, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop ends the process with SIGTERM (as Kubernetes does) and returns its output.
func (p *process) stop() string {
	select {
	case <-p.done:
		return p.out.String()
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	return p.out.String()
}

// secretDatabase returns the URL of a fresh migrated database that carries
// dbPassword: on a trust-auth server as is, otherwise through a login role
// created with that password.
func secretDatabase(t *testing.T) string {
	t.Helper()
	_, plain := testenv.Database(t)
	u, err := neturl.Parse(plain)
	if err != nil {
		t.Fatal(err)
	}
	user := "postgres"
	if u.User != nil {
		user = u.User.Username()
	}
	u.User = neturl.UserPassword(user, dbPassword)
	if pingDB(u.String()) == nil {
		return u.String()
	}
	admin, err := sqlx.Open("postgres", plain)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	role := fmt.Sprintf("setflow_secret_%d", time.Now().UnixNano())
	if _, err := admin.Exec(fmt.Sprintf(`CREATE ROLE %s LOGIN PASSWORD '%s' IN ROLE %s`, role, dbPassword, user)); err != nil {
		t.Fatalf("the test needs a database login with a password of its own: %v", err)
	}
	t.Cleanup(func() {
		if a, err := sqlx.Open("postgres", plain); err == nil {
			_, _ = a.Exec(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1`, role)
			_, _ = a.Exec(`DROP ROLE IF EXISTS ` + role)
			a.Close()
		}
	})
	u.User = neturl.UserPassword(role, dbPassword)
	if err := pingDB(u.String()); err != nil {
		t.Fatalf("login with the test's password: %v", err)
	}
	return u.String()
}

func pingDB(url string) error {
	db, err := sqlx.Open("postgres", url)
	if err != nil {
		return err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return db.PingContext(ctx)
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return string(body)
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %v", url, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// The long-running commands started with every secret set: their start-up
// logs (debug level, including the "reaction back ends" line), /metrics and
// the codec server's refusal show none of them.
func TestNoSecretInStartupLogsAndMetrics(t *testing.T) {
	dbURL := secretDatabase(t)
	noTemporal := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	base := secretEnv(dbURL)
	base["SETFLOW_LOG_LEVEL"] = "debug"
	base["TEMPORAL_ADDRESS"] = noTemporal
	with := func(extra map[string]string) []string { return environ(base, extra) }

	t.Run("ingress", func(t *testing.T) {
		listen, metricsAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)), fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
		p := startSetflow(t, with(map[string]string{"SETFLOW_AUDIENCES": "app", "SETFLOW_KAKAO_APP_ID": "1",
			"SETFLOW_LISTEN": listen, "SETFLOW_METRICS_LISTEN": metricsAddr}), "ingress")
		p.waitFor(t, "ingress listening", "metrics listening")
		metrics := httpGet(t, "http://"+metricsAddr+"/metrics")
		if !strings.Contains(metrics, "go_goroutines") {
			t.Fatalf("no metrics: %s", metrics)
		}
		assertNoSecret(t, "ingress /metrics", metrics)
		assertNoSecret(t, "ingress /readyz", httpGet(t, "http://"+listen+"/readyz"))
		assertNoSecret(t, "ingress logs", p.stop())
	})
	t.Run("relay", func(t *testing.T) {
		p := startSetflow(t, with(nil), "relay")
		p.waitFor(t, "payload encryption on", "relay running")
		assertNoSecret(t, "relay logs", p.stop())
	})
	t.Run("worker", func(t *testing.T) {
		p := startSetflow(t, with(map[string]string{"SETFLOW_SESSIONS_BACKEND": "http", "SETFLOW_CRM": "hubspot",
			"SETFLOW_SMTP_HOST": "127.0.0.1", "SETFLOW_SMTP_PORT": "1", "SETFLOW_SMTP_USERNAME": "mailer", "SETFLOW_MAIL_FROM": "s@example.com", "SETFLOW_SERVICE_NAME": "Example"}), "worker")
		p.waitFor(t, "payload encryption on", "reaction back ends", "temporal unreachable")
		assertNoSecret(t, "worker logs", p.stop())
	})
	t.Run("worker-redis", func(t *testing.T) {
		// The Redis URL's password reaches the Redis server; whether it takes
		// it or refuses it (its error quotes it), nothing shows it.
		p := startSetflow(t, with(map[string]string{"SETFLOW_SESSIONS_BACKEND": "redis", "SETFLOW_CRM": "webhook"}), "worker")
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline) && !strings.Contains(p.out.String(), "reaction back ends"); {
			select {
			case <-p.done:
				deadline = time.Now()
			case <-time.After(50 * time.Millisecond):
			}
		}
		out := p.stop()
		t.Logf("worker with a Redis password:\n%s", out)
		assertNoSecret(t, "worker logs (redis)", out)
	})
	t.Run("codec-server", func(t *testing.T) {
		listen := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
		p := startSetflow(t, with(map[string]string{"SETFLOW_CODEC_LISTEN": listen}), "codec-server")
		p.waitFor(t, "codec server listening")
		resp, err := http.Post("http://"+listen+"/decode", "application/json", strings.NewReader(`{"payloads":[]}`))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("codec server without a token: %d", resp.StatusCode)
		}
		assertNoSecret(t, "codec server answer", string(body))
		assertNoSecret(t, "codec server logs", p.stop())
	})
	t.Run("dev", func(t *testing.T) {
		dir := t.TempDir()
		p := startSetflow(t, with(map[string]string{"SETFLOW_LISTEN": fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)),
			"SETFLOW_METRICS_LISTEN": fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)),
			"SETFLOW_DEV_KEY":        filepath.Join(dir, "signing-key.pem")}), "dev")
		p.waitFor(t, "ingress listening", "reaction back ends", "relay running")
		assertNoSecret(t, "dev logs", p.stop())
	})
}

// Outside dev, the ingress, relay, worker and codec server refuse to start
// without their keys, naming the variables to set.
func TestProductionCommandsRefuseToStartWithoutKeys(t *testing.T) {
	for _, v := range []string{config.EnvAuditKey, config.EnvCodecKeys, config.EnvCodecAuthToken, config.EnvInsecureDevKeys} {
		t.Setenv(v, "")
	}
	// Nothing listens there: a command past its key check fails at once.
	t.Setenv("SETFLOW_DATABASE_URL", "postgres://postgres@127.0.0.1:1/setflow?sslmode=disable")
	t.Setenv("SETFLOW_LOG_LEVEL", "error")
	ctx := context.Background()
	cases := []struct {
		name   string
		run    func(context.Context, []string) error
		want   []string
		notOut string // what the command does not need
	}{
		{"ingress", runIngress, []string{config.EnvAuditKey}, config.EnvCodecKeys},
		{"relay", runRelay, []string{config.EnvAuditKey, config.EnvCodecKeys}, config.EnvCodecAuthToken},
		{"worker", runWorker, []string{config.EnvAuditKey, config.EnvCodecKeys}, config.EnvCodecAuthToken},
		{"codec-server", runCodecServer, []string{config.EnvCodecAuthToken}, config.EnvAuditKey},
	}
	for _, c := range cases {
		err := c.run(ctx, nil)
		if err == nil {
			t.Fatalf("%s started without keys", c.name)
		}
		for _, want := range append(c.want, "-"+config.FlagInsecureDevKeys) {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: refusal does not name %s: %v", c.name, want, err)
			}
		}
		if strings.Contains(err.Error(), c.notOut) {
			t.Errorf("%s asks for %s, which it does not use: %v", c.name, c.notOut, err)
		}
	}
	// The public development audit key counts as none.
	t.Setenv(config.EnvAuditKey, config.DevAuditKey)
	if err := runIngress(ctx, nil); err == nil || !strings.Contains(err.Error(), config.EnvAuditKey) {
		t.Fatalf("ingress with the public dev audit key: %v", err)
	}
	t.Setenv(config.EnvAuditKey, "")

	// The opt-out, as a flag or in the environment, gets each past the check
	// (to the next thing missing here: audiences, the database, the key ring).
	for _, c := range cases {
		err := c.run(ctx, []string{"-" + config.FlagInsecureDevKeys})
		if err == nil || strings.Contains(err.Error(), "-"+config.FlagInsecureDevKeys) {
			t.Errorf("%s -%s: %v", c.name, config.FlagInsecureDevKeys, err)
		}
	}
	t.Setenv(config.EnvInsecureDevKeys, "1")
	if err := runWorker(ctx, nil); err == nil || !strings.Contains(err.Error(), "database unreachable") {
		t.Errorf("worker with %s=1: %v", config.EnvInsecureDevKeys, err)
	}
}

// With the opt-out, a command really starts, warning on every start; `setflow
// dev` starts with nothing set at all. Neither needs a key.
func TestInsecureDevKeysAndDevStartWithoutKeys(t *testing.T) {
	_, dbURL := testenv.Database(t)
	env := map[string]string{"SETFLOW_DATABASE_URL": dbURL,
		"TEMPORAL_ADDRESS": fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))}

	relay := startSetflow(t, environ(env), "relay", "-"+config.FlagInsecureDevKeys)
	relay.waitFor(t, "INSECURE", config.EnvAuditKey, config.EnvCodecKeys, "relay running")

	listen := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	dev := startSetflow(t, environ(env, map[string]string{"SETFLOW_LISTEN": listen,
		"SETFLOW_METRICS_LISTEN": fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)),
		"SETFLOW_DEV_KEY":        filepath.Join(t.TempDir(), "signing-key.pem")}), "dev")
	dev.waitFor(t, "ingress listening", "reaction back ends", "relay running")
	httpGet(t, "http://"+listen+"/healthz")
	if out := dev.stop(); strings.Contains(out, config.FlagInsecureDevKeys) || !strings.Contains(out, "public development key") {
		t.Fatalf("dev output:\n%s", out)
	}
}

// config repeats the codec package's variable names (it does not import it).
func TestKeyVariableNamesMatchTheCodecPackage(t *testing.T) {
	if config.EnvCodecKeys != codec.EnvKeys || config.EnvCodecAuthToken != codec.EnvAuthToken {
		t.Fatal("config and codec disagree on the codec variables' names")
	}
}
