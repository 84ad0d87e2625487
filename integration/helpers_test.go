package integration

import (
	"testing"
	"time"

	"go.temporal.io/sdk/testsuite"

	"github.com/setflow/setflow/internal/testenv"
)

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func freePort(t *testing.T) int { return testenv.FreePort(t) }

func startTemporalAt(t *testing.T, hostPort string) *testsuite.DevServer {
	return testenv.Temporal(t, hostPort)
}
