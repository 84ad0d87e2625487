package workflows

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/setflow/setflow/activities"
	"github.com/setflow/setflow/event"
)

// The histories in testdata/histories were recorded from real runs against a
// Temporal dev server. Replaying them against the current workflow code fails
// when a change makes the code issue different commands for the same history
// (reordered steps, an added or removed activity, timer or child workflow, a
// changed local activity) — a change that would break every reaction in
// flight when the worker is deployed. Such a change needs workflow.GetVersion,
// not new recordings.
//
// To re-record (after an intended, versioned change, or to add a scenario):
//
//	go test -tags record -count=1 -run TestRecordHistories ./workflows/
//
// It starts the dev server from .bin/temporal (or SETFLOW_TEMPORAL_BIN), runs
// each scenario with a real worker whose activities are simple stand-ins, and
// rewrites the JSON files. Plain `go test` only replays.

const historiesDir = "testdata/histories"

func newReplayer(t *testing.T) worker.WorkflowReplayer {
	t.Helper()
	r := worker.NewWorkflowReplayer()
	r.RegisterWorkflow(Reaction)
	r.RegisterWorkflow(Purge)
	return r
}

// recordedHistories are the scenarios TestRecordHistories writes; each must
// be present, so a lost file does not silently shrink the replay coverage.
var recordedHistories = []string{
	"reaction-account-disabled-hijacking.json",
	"reaction-user-unlinked.json",
	"purge-after-timer.json",
	"reaction-parked-then-retried.json",
	"reaction-user-linked-no-pending-purge.json",
	"reaction-user-linked-cancels-purge.json",
	"purge-cancelled.json",
}

func TestReplayRecordedHistories(t *testing.T) {
	for _, name := range recordedHistories {
		t.Run(strings.TrimSuffix(name, ".json"), func(t *testing.T) {
			path := filepath.Join(historiesDir, name)
			_, err := os.Stat(path)
			require.NoError(t, err, "recorded history missing; see the comment at the top of replay_test.go")
			require.NoError(t, newReplayer(t).ReplayWorkflowHistoryFromJSONFile(quietLogger{}, path))
		})
	}
	// A history added by hand is replayed too.
	files, err := filepath.Glob(filepath.Join(historiesDir, "*.json"))
	require.NoError(t, err)
	for _, f := range files {
		if !contains(recordedHistories, filepath.Base(f)) {
			t.Run(filepath.Base(f), func(t *testing.T) {
				require.NoError(t, newReplayer(t).ReplayWorkflowHistoryFromJSONFile(quietLogger{}, f))
			})
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// The replay check has teeth: a Reaction that runs the same steps in another
// order does not replay the recorded history.
func TestReplayDetectsReorderedSteps(t *testing.T) {
	reordered := func(ctx workflow.Context, env event.Envelope) (ReactionResult, error) {
		var plans []activities.PlannedEvent
		lctx := workflow.WithLocalActivityOptions(ctx, workflow.LocalActivityOptions{StartToCloseTimeout: 10 * time.Second})
		if err := workflow.ExecuteLocalActivity(lctx, a.PlanReaction, env).Get(ctx, &plans); err != nil {
			return ReactionResult{}, err
		}
		r := newRunner(ctx, env.Key, env.Events[0], plans[0].SubjectHash)
		if err := r.audit("received", OutcomeReceived, nil); err != nil {
			return ReactionResult{}, err
		}
		steps := plans[0].Reaction.Steps
		steps[0], steps[1] = steps[1], steps[0] // lock before revoke
		for _, st := range steps {
			if _, err := r.step(st, ""); err != nil {
				return ReactionResult{}, err
			}
		}
		return ReactionResult{}, nil
	}
	r := worker.NewWorkflowReplayer()
	r.RegisterWorkflowWithOptions(reordered, workflow.RegisterOptions{Name: "Reaction"})
	err := r.ReplayWorkflowHistoryFromJSONFile(quietLogger{}, filepath.Join(historiesDir, "reaction-account-disabled-hijacking.json"))
	require.Error(t, err)
	require.Contains(t, err.Error(), "nondeterministic")
}
