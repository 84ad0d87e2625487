// Package testenv starts and connects the real components that setflow's tests
// run against: the machine's PostgreSQL and a Temporal dev server built from
// source. When SETFLOW_REQUIRE_INTEGRATION=1 (set by the test command) or CI
// is set (CI systems set CI=true), a missing component fails the test instead
// of skipping it.
package testenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	_ "github.com/lib/pq" // database driver
	"github.com/setflow/setflow/internal/temporalsetup"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/testsuite"

	"github.com/setflow/setflow/internal/devserver"
	"github.com/setflow/setflow/internal/pgurl"
	"github.com/setflow/setflow/migrations"
)

// Unavailable skips the test, or fails it when integration is required.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("SETFLOW_REQUIRE_INTEGRATION") == "1" || os.Getenv("CI") != "" {
		t.Fatalf("required component unavailable: %s", msg)
	}
	t.Skipf("skipping: %s (set SETFLOW_REQUIRE_INTEGRATION=1 or CI=true to fail instead)", msg)
}

// AdminURL is the server-level database URL used to create throw-away databases.
func AdminURL() string {
	if u := os.Getenv("SETFLOW_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
}

func randomSuffix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Database creates a fresh, migrated database for the test and drops it after.
// It returns the handle and the URL (for components that open their own pool).
func Database(t testing.TB) (*sqlx.DB, string) {
	t.Helper()
	return DatabaseAt(t, 0)
}

// DatabaseAt is Database migrated up to version only (0: all), for tests of
// an upgrade.
func DatabaseAt(t testing.TB, version int64) (*sqlx.DB, string) {
	t.Helper()
	admin, err := sqlx.Open("postgres", AdminURL())
	if err != nil {
		Unavailable(t, "postgres: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := admin.PingContext(ctx); err != nil {
		admin.Close()
		Unavailable(t, "postgres at %s: %v", redact(AdminURL()), err)
	}
	name := "setflow_t_" + randomSuffix()
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		admin.Close()
		t.Fatalf("create database: %v", err)
	}
	url := pgurl.WithDatabase(AdminURL(), name)
	db, err := sqlx.Open("postgres", url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		db.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
		admin.Close()
	})
	if err := migrations.UpTo(ctx, db.DB, version); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return db, url
}

func redact(url string) string {
	if i := strings.Index(url, "@"); i >= 0 {
		if j := strings.Index(url, "://"); j >= 0 && j < i {
			return url[:j+3] + "…" + url[i:]
		}
	}
	return url
}

// RepoRoot finds the directory holding go.mod.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the test directory")
		}
		dir = parent
	}
}

// TemporalBinary returns the path of the Temporal CLI built from source by the
// test command (SETFLOW_TEMPORAL_BIN, else .bin/temporal in the repository).
func TemporalBinary(t testing.TB) string {
	t.Helper()
	p := os.Getenv("SETFLOW_TEMPORAL_BIN")
	if p == "" {
		p = filepath.Join(RepoRoot(t), ".bin", "temporal")
	}
	if _, err := os.Stat(p); err != nil {
		Unavailable(t, "temporal CLI at %s (deployments/local/test.sh builds it): %v", p, err)
	}
	return p
}

// FreePort returns a TCP port that was free a moment ago on 127.0.0.1.
func FreePort(t testing.TB) int {
	t.Helper()
	p, err := devserver.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Temporal starts a Temporal dev server on hostPort ("" picks a free port) with
// a fresh namespace-local database, and stops it when the test ends.
func Temporal(t testing.TB, hostPort string) *testsuite.DevServer {
	t.Helper()
	bin := TemporalBinary(t)
	if hostPort == "" {
		hostPort = fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var stderr lockedBuffer
	srv, err := testsuite.StartDevServer(ctx, testsuite.DevServerOptions{
		ExistingPath: bin,
		ClientOptions: &client.Options{
			HostPort:  hostPort,
			Namespace: "default",
			Logger:    quietLogger{},
		},
		LogLevel: "error",
		// setflow's workflows set these; an unregistered one fails them.
		ExtraArgs: temporalsetup.DevServerArgs(),
		Stdout:    io.Discard,
		Stderr:    &stderr,
	})
	if err != nil {
		t.Fatalf("start temporal dev server: %v\n%s", err, stderr.String())
	}
	t.Cleanup(func() {
		_ = srv.Stop() // harmless when the test stopped it already
		if t.Failed() && stderr.Len() > 0 {
			t.Logf("temporal dev server stderr:\n%s", stderr.String())
		}
	})
	return srv
}

// lockedBuffer collects a child process's output from its copying goroutine.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Len()
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// quietLogger drops the SDK's chatter; tests assert outcomes, not logs.
type quietLogger struct{}

func (quietLogger) Debug(string, ...any) {}
func (quietLogger) Info(string, ...any)  {}
func (quietLogger) Warn(string, ...any)  {}
func (quietLogger) Error(string, ...any) {}
