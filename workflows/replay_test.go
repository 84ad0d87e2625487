package workflows

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
)

// The histories in testdata/histories were recorded from real runs against a
// Temporal dev server. Replaying them against the current workflow code fails
// when a change makes the code issue different commands for the same history
// (reordered steps, an added or removed activity, timer or coroutine that
// issues commands, a changed local activity) — a change that would break
// every user stream and reaction in flight when the worker is deployed (a
// user's stream lives as long as its pending purge). Such a change needs
// workflow.GetVersion, not new recordings.
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
	r.RegisterWorkflow(UserStream)
	return r
}

// recordedHistories are the scenarios TestRecordHistories writes; each must
// be present, so a lost file does not silently shrink the replay coverage.
var recordedHistories = []string{
	"stream-account-disabled-hijacking.json",
	"stream-unlink-then-relink-cancels-purge.json",
	"stream-purge-after-timer.json",
	"stream-parked-then-retried.json",
	"reaction-talk-share.json",
	// Recorded with the operators' view (search attributes, details) and
	// the blast-radius guard.
	"stream-held-then-approved.json",
	// A late address change runs an earlier notice again (versioned:
	// renotify-previous-addresses).
	"stream-late-address-renotifies.json",
	// A document to the service retried while the next one waits
	// (versioned: notify-service-one-at-a-time).
	"stream-notify-service-one-at-a-time.json",
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

// swapScheduled loads a recorded history and swaps the activity types of the
// first scheduled activities named a and b: the history of a workflow that
// ran the same steps in the other order.
func swapScheduled(t *testing.T, file, a, b string) *historypb.History {
	t.Helper()
	f, err := os.Open(filepath.Join(historiesDir, file))
	require.NoError(t, err)
	defer f.Close()
	hist, err := client.HistoryFromJSON(f, client.HistoryJSONOptions{})
	require.NoError(t, err)
	var ea, eb *historypb.ActivityTaskScheduledEventAttributes
	for _, ev := range hist.Events {
		attrs := ev.GetActivityTaskScheduledEventAttributes()
		switch {
		case attrs == nil:
		case attrs.ActivityType.GetName() == a && ea == nil:
			ea = attrs
		case attrs.ActivityType.GetName() == b && eb == nil:
			eb = attrs
		}
	}
	require.NotNil(t, ea, "%s scheduled in %s", a, file)
	require.NotNil(t, eb, "%s scheduled in %s", b, file)
	ea.ActivityType, eb.ActivityType = eb.ActivityType, ea.ActivityType
	return hist
}

// The replay check has teeth: the current code does not replay a history in
// which the same steps were scheduled in another order — the history a
// reordered workflow would have recorded (replay compares the code's
// commands with the history, so reordering either side is the same test).
func TestReplayDetectsReorderedSteps(t *testing.T) {
	for _, tc := range []struct{ file, a, b string }{
		// The stream schedules the state change and the revocation in one
		// workflow task: the state first.
		{"stream-account-disabled-hijacking.json", "ApplyEvent", "RevokeSessions"},
		// A purge's state change, then its sessions.
		{"stream-purge-after-timer.json", "RunPurge", "PurgeSessions"},
		{"reaction-talk-share.json", "RecordTalkShare", "RunTalkShareHook"},
	} {
		t.Run(strings.TrimSuffix(tc.file, ".json"), func(t *testing.T) {
			err := newReplayer(t).ReplayWorkflowHistory(quietLogger{}, swapScheduled(t, tc.file, tc.a, tc.b))
			require.Error(t, err)
			require.Contains(t, err.Error(), "nondeterministic")
			require.Contains(t, err.Error(), tc.a)
			require.Contains(t, err.Error(), tc.b)
		})
	}
}
