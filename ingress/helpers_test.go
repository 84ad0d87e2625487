package ingress_test

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/setflow/setflow/inbox"
	"github.com/setflow/setflow/ingress"
	"github.com/setflow/setflow/internal/testenv"
)

const (
	adminKey   = "adm1n-primary-0123456789abcdef0123"
	rotatedKey = "adm1n-rotated-fedcba9876543210fedc"
	appID      = "1234567"
	whIssuer   = "https://kauth.kakao.com"
	// auditKey keys the unlink dedupe key (Kakao.KeyHash).
	auditKey = "test-audit-key-0123456789abcdef"
)

// whLogBuffer collects log output from the server's goroutines.
type whLogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *whLogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *whLogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// whClock is a settable time source for the server.
type whClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *whClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *whClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// env is the real ingress on an HTTP server, writing to a fresh database.
type whEnv struct {
	t     *testing.T
	DB    *sqlx.DB
	Inbox *inbox.Postgres
	Srv   *ingress.Server
	URL   string
	Logs  *whLogBuffer
	Clock *whClock
}

func newWebhookEnv(t *testing.T, configure ...func(*ingress.Server)) *whEnv {
	t.Helper()
	db, _ := testenv.Database(t)
	logs := &whLogBuffer{}
	clk := &whClock{t: time.Date(2025, 4, 16, 7, 53, 17, 0, time.UTC)}
	srv := &ingress.Server{
		Inbox: inbox.NewPostgres(db),
		Log:   slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:   clk.Now,
		Kakao: ingress.Kakao{AdminKeys: []string{adminKey, rotatedKey}, AppID: appID, Issuer: whIssuer, KeyHash: []byte(auditKey)},
	}
	for _, f := range configure {
		f(srv)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	e := &whEnv{t: t, DB: db, Inbox: inbox.NewPostgres(db), Srv: srv, URL: ts.URL, Logs: logs, Clock: clk}
	t.Cleanup(func() {
		// Secrets never reach the logs, whatever the test sent.
		for _, secret := range []string{adminKey, rotatedKey, "wrong-key-"} {
			if strings.Contains(logs.String(), secret) {
				t.Errorf("logs contain %q:\n%s", secret, logs.String())
			}
		}
	})
	return e
}

type whResponse struct {
	Status int
	Header http.Header
	Body   string
}

// errBody decodes the JSON error body.
func (r whResponse) errBody(t *testing.T) (code, desc string) {
	t.Helper()
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("error Content-Type %q, want application/json (body %q)", ct, r.Body)
	}
	var b struct {
		Err         string `json:"err"`
		Description string `json:"description"`
	}
	if err := json.Unmarshal([]byte(r.Body), &b); err != nil {
		t.Fatalf("error body %q: %v", r.Body, err)
	}
	return b.Err, b.Description
}

// do sends one request; headers is "Name: value" pairs.
func (e *whEnv) do(method, pathAndQuery, contentType, body string, headers ...string) whResponse {
	e.t.Helper()
	req, err := http.NewRequest(method, e.URL+pathAndQuery, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ": ")
		req.Header.Add(k, v)
	}
	c := &http.Client{Timeout: 5 * time.Second}
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	if d := time.Since(start); d > 3*time.Second {
		e.t.Errorf("%s %s answered after %v, beyond Kakao's 3 s", method, pathAndQuery, d)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 500 && resp.StatusCode != http.StatusServiceUnavailable {
		e.t.Errorf("%s %s: %d — only 503 (inbox unavailable) may be a 5xx", method, pathAndQuery, resp.StatusCode)
	}
	return whResponse{Status: resp.StatusCode, Header: resp.Header, Body: string(b)}
}

func kakaoAuth(key string) string { return "Authorization: KakaoAK " + key }

func (e *whEnv) rows() int {
	e.t.Helper()
	var n int
	if err := e.DB.Get(&n, `SELECT count(*) FROM setflow_inbox`); err != nil {
		e.t.Fatal(err)
	}
	return n
}

func (e *whEnv) entry(key string) inbox.Entry {
	e.t.Helper()
	en, err := e.Inbox.Get(e.t.Context(), key)
	if err != nil {
		e.t.Fatalf("inbox entry %s: %v", key, err)
	}
	return en
}

func whPayload(t *testing.T, raw json.RawMessage) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("payload %s: %v", raw, err)
	}
	return m
}

func expectOK(t *testing.T, r whResponse, what string) {
	t.Helper()
	if r.Status != http.StatusOK || r.Body != "" {
		t.Fatalf("%s: got %d %q, want exactly 200 with an empty body", what, r.Status, r.Body)
	}
}

func expectRefused(t *testing.T, r whResponse, status int, wantCode, descPart string) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("got %d %q, want %d", r.Status, r.Body, status)
	}
	code, desc := r.errBody(t)
	if code != wantCode || !strings.Contains(desc, descPart) {
		t.Fatalf("error body err=%q description=%q, want err=%q with %q", code, desc, wantCode, descPart)
	}
}
