package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/testsuite"
	sdkworker "go.temporal.io/sdk/worker"

	"github.com/setflow/setflow/activities"
	"github.com/setflow/setflow/internal/testenv"
	"github.com/setflow/setflow/worker"
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

// workerOptions are the test workers' options. The SDK fails a workflow
// task whose code runs over a second without yielding (a deadlock guard for
// development); under the race detector on a loaded 2-core machine plain
// workflow code can take that long, and the abandoned coroutine then races
// with the next task (a data race report inside the SDK). Tests allow 10 s.
func workerOptions(o sdkworker.Options) sdkworker.Options {
	o.DeadlockDetectionTimeout = 10 * time.Second
	return o
}

// startWorkerWith runs a worker with the given activities on c (startWorker
// with dependencies a test chooses, e.g. the Talk store and a share hook).
func (s *stack) startWorkerWith(c client.Client, acts *activities.Activities) {
	s.t.Helper()
	w := worker.New(c, acts, workerOptions(sdkworker.Options{}))
	if err := w.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(w.Stop)
	s.Temporal = c
}

// auditSteps lists an event's audit trail as step=outcome, comma-separated.
func (s *stack) auditSteps(key string) string {
	s.t.Helper()
	recs, err := s.Audit.ForEvent(context.Background(), key)
	if err != nil {
		s.t.Fatal(err)
	}
	var out []string
	for _, r := range recs {
		out = append(out, r.Step+"="+r.Outcome)
	}
	return strings.Join(out, ",")
}
