package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/setflow/setflow/ingress"
	"github.com/setflow/setflow/internal/testenv"
	"github.com/setflow/setflow/migrations"
)

func probe(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	b, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(b)
}

func itoa(n int) string { return strconv.Itoa(n) }

func testLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestIngressReadinessFollowsSchemaVersion: the ingress's /readyz failed on
// an un-migrated database before (it only pinged), and deliveries then got
// 503s. It must answer 503 until the schema is at the binary's version,
// then 200 — without any Temporal anywhere (the ingress never needs it).
func TestIngressReadinessFollowsSchemaVersion(t *testing.T) {
	db, _ := testenv.Database(t)
	ctx := context.Background()
	latest := migrations.Latest()
	if _, err := db.ExecContext(ctx, `DELETE FROM `+migrations.TableName+` WHERE version_id = $1`, latest); err != nil {
		t.Fatal(err)
	}
	srv := &ingress.Server{Ready: ingressReady(db.DB)}
	h := srv.Handler()
	if code, body := probe(t, h, "/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("schema one version behind: /readyz = %d %q, want 503", code, body)
	}
	if code, _ := probe(t, h, "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz = %d, want 200 (liveness does not depend on the schema)", code)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO `+migrations.TableName+` (version_id, is_applied) VALUES ($1, true)`, latest); err != nil {
		t.Fatal(err)
	}
	if code, body := probe(t, h, "/readyz"); code != http.StatusOK {
		t.Fatalf("schema current, Temporal absent: /readyz = %d %q, want 200", code, body)
	}
}

// TestReadinessWithoutSchemaTable: a database nobody migrated (no version
// table at all) is not ready, and the check does not create the table.
func TestReadinessWithoutSchemaTable(t *testing.T) {
	db, _ := testenv.Database(t)
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, `DROP TABLE `+migrations.TableName); err != nil {
		t.Fatal(err)
	}
	r := &readiness{checks: []readyCheck{dbReady(db.DB)}}
	code, body := probe(t, r.handler(), "/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "schema behind") {
		t.Fatalf("/readyz = %d %q, want 503 naming the schema", code, body)
	}
	var exists bool
	if err := db.QueryRowContext(ctx, `SELECT to_regclass($1) IS NOT NULL`, migrations.TableName).Scan(&exists); err != nil || exists {
		t.Fatalf("readiness created the version table (exists=%v, err=%v)", exists, err)
	}
}

// TestServiceReadinessNeedsTemporal: the relay's and worker's /readyz fails
// while Temporal is unreachable and passes once it answers; it fails again
// once the process begins a graceful stop, while /healthz still passes.
func TestServiceReadinessNeedsTemporal(t *testing.T) {
	db, _ := testenv.Database(t)
	hostPort := "127.0.0.1:" + itoa(testenv.FreePort(t))
	r, closeClient, err := serviceReadiness(db.DB, client.Options{HostPort: hostPort, Namespace: "default"})
	if err != nil {
		t.Fatal(err)
	}
	defer closeClient()
	h := r.handler()
	if code, body := probe(t, h, "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "temporal") {
		t.Fatalf("Temporal down: /readyz = %d %q, want 503 naming temporal", code, body)
	}
	testenv.Temporal(t, hostPort)
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body := probe(t, h, "/readyz")
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Temporal up: /readyz = %d %q, want 200", code, body)
		}
		time.Sleep(200 * time.Millisecond)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stop := serveHealth(ctx, testLogger(), "127.0.0.1:"+itoa(testenv.FreePort(t)), r)
	defer stop()
	cancel()
	deadline = time.Now().Add(5 * time.Second)
	for !r.stopping.Load() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if code, _ := probe(t, h, "/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("stopping: /readyz = %d, want 503", code)
	}
	if code, _ := probe(t, h, "/healthz"); code != http.StatusOK {
		t.Fatalf("stopping: /healthz = %d, want 200", code)
	}
}

// TestMigrateWaitReturnsOnceMigrated: `setflow migrate -wait` (an init
// container) blocks while the schema is behind and returns once the
// migrate Job has brought it to this binary's version.
func TestMigrateWaitReturnsOnceMigrated(t *testing.T) {
	db, _ := testenv.Database(t)
	ctx := context.Background()
	latest := migrations.Latest()
	if _, err := db.ExecContext(ctx, `DELETE FROM `+migrations.TableName+` WHERE version_id = $1`, latest); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- waitForSchema(ctx, testLogger(), db.DB, time.Minute) }()
	select {
	case err := <-done:
		t.Fatalf("migrate -wait returned while the schema was behind: %v", err)
	case <-time.After(3 * time.Second):
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO `+migrations.TableName+` (version_id, is_applied) VALUES ($1, true)`, latest); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("migrate -wait did not return after the schema reached the binary's version")
	}
	short, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if _, err := db.ExecContext(ctx, `DELETE FROM `+migrations.TableName+` WHERE version_id = $1`, latest); err != nil {
		t.Fatal(err)
	}
	if err := waitForSchema(short, testLogger(), db.DB, time.Minute); err == nil {
		t.Fatal("migrate -wait succeeded on a schema behind the binary")
	}
}
